"""sources: what goes in — labelled text (built-in tweets, files, Hub datasets), batches, and models from
folders, GGUF files and the Hub.

May import: headprune.core, headprune.model. Never a later stage.
"""
