"""Evaluation: generate on a held-out split with fixed seeds and measure the model against an
untrained floor and the ground-truth ceiling (`interactavatar evaluate`)."""
