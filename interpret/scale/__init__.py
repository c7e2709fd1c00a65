"""Scans and batch explanations spread over many workers (Ray): collections cut into shards of whole batches,
per-worker models loaded once, pluggable reducers with an exact merge, resumable partial results on disk.
Sits above units/ and attribution/ (it runs their scans and explanations) and below cli/.
"""
