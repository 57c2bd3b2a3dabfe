"""Stage 4 of the pipeline: colormaps, overlays and grids, and the background writer that logs them."""
