//! Plexus test bed.
