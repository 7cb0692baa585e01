"""Getting a tuned model out: the layouts other tools load (diffusers, single file, ComfyUI, kohya), merging, the card.

``layouts``: key maps per family; ``merge``: reading a trained folder and fusing a LoRA;
``card``: the model card; ``writer``: one export of a trained folder into a local folder.
"""
