"""lightning-llm: pretrain GPT-style language models and fine-tune BERT-family classifiers."""

__version__ = "0.1.0"
