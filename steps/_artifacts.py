"""Names of artifacts that one step saves and another step looks up by name."""

KEY_ARTIFACT = "human_eval_key"  # export_human_eval saves it, import_human_eval finds it by export id
