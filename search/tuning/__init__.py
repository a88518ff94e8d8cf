"""The search itself: the space and its recipes, the prescreen, Ray Tune's wiring, the trial ledger that ASHA, the
time budget and the progress line read."""
