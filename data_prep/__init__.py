"""Data stage: read the team's files, map them to chat messages, split, render with masks, write the run's data."""
