//! Timing and peak-memory measurement of external commands.
