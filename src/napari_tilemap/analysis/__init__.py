"""What a map says and how good it is: evaluation, thresholds, regions, exports."""
