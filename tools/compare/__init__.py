"""One scenario catalog, run against every registry client, judged from what the servers saw."""
