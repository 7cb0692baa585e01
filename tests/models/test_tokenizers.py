import open_clip

from srpo.models.tokenizers import clip_tokenizer, t5_tokenizer


def test_offline_clip_tokenizer_equals_open_clip():
    ours, theirs = clip_tokenizer(77), open_clip.get_tokenizer("ViT-B-32")
    for text in ["a photo of a cat", "Natural-lighting. A portrait, detailed!", "Concept art. 3 dogs"]:
        ids = ours(text).input_ids  # up to and including <|endoftext|>; padding differs by design
        assert ids == theirs([text])[0].tolist()[: len(ids)]
        assert ids[-1] == 49407


def test_t5_unigram_tokenizer_covers_unknown_words_by_characters():
    tok = t5_tokenizer(model_max_length=16)
    known = tok("a red circle").input_ids
    assert len(known) == 4 and known[-1] == tok.eos_token_id
    unknown = tok("zebra").input_ids
    assert tok.unk_token_id not in unknown  # spelled out from single characters
    assert len(tok("word " * 40, truncation=True).input_ids) == 16


def test_offline_qwen2_tokenizer_round_trips_and_keeps_its_special_tokens():
    from srpo.models.tokenizers import QWEN_SPECIAL_TOKENS, qwen2_tokenizer

    tok = qwen2_tokenizer(model_max_length=32)
    assert len(tok("a red circle").input_ids) == 3  # known words are one token each
    for text in ["a red circle", "Zebra, 3 dogs! ünïcode"]:
        assert tok.decode(tok(text).input_ids) == text  # unknown words are spelled out in bytes
    for special in QWEN_SPECIAL_TOKENS:
        assert len(tok(special).input_ids) == 1
    chat = tok.apply_chat_template([{"role": "user", "content": "a cat"}], tokenize=False,
                                   add_generation_prompt=True, enable_thinking=False)
    assert chat == "<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    parts = tok.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "a cat"}]}],
                                    tokenize=False)
    assert parts == "<|im_start|>user\na cat<|im_end|>\n"
