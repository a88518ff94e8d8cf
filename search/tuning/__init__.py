"""The search itself: the space and its recipes, the prescreen, Ray Tune's wiring, ASHA, the time budget and
progress."""
