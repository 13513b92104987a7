"""acr-blob."""
