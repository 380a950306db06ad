//! The memory-mapped, segmented write-ahead log with group commit. Not
//! built yet: see the write-ahead log issue.
