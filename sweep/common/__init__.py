"""What every stage uses: atomic file writes, digests, and the masking of secrets."""
