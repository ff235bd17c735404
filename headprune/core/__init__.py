"""core: what every stage shares and nothing else — errors, progress, file safety, cache paths, logging.

May import: the standard library, torch (typing only) and tqdm. Never another headprune stage.
"""
