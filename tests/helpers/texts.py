"""The texts the tiny models are run on: review rows for CSV files, and small labelled data frames."""
from __future__ import annotations

import pandas as pd

# "text,label" rows of a review CSV (labels by name); the CLI tests write them under a "review,sentiment" header
REVIEWS = ["good movie,positive", "awful car,negative", "the car,neutral", "love this,positive", "bad bad,negative",
           "great fine,positive", "hate this car,negative", "a movie,neutral", "ok the car,neutral", "not good,negative"]

LABEL2ID = {"negative": 0, "neutral": 1, "positive": 2}

# twelve labelled texts of 1-8 words (evaluation loop, training, zero-shot)
TWELVE_TEXTS = pd.DataFrame({
    "text": ["good", "this movie is awful", "a car", "i love this great fine car ok", "bad", "the tweet is not ok",
             "great great movie", "hate this car", "ok fine", "awful awful bad", "love love", "the movie"],
    "label": [2, 0, 1, 2, 0, 1, 2, 0, 1, 0, 2, 1],
})

# six labelled texts (batches, model loading)
SIX_TEXTS = pd.DataFrame({"text": ["good", "this movie is awful", "a car", "i love this great fine car ok",
                                   "bad", "the tweet is not ok"], "label": [2, 0, 1, 2, 0, 1]})
