//! Deterministic pseudo-random numbers for the mutation loops that check the parsers of
//! untrusted input (buildspecs, log batches, image layers, image names) never panic.

/// An xorshift64 generator started at `seed` (not zero): one seed, one sequence, so a
/// failing mutation can be replayed.
pub fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}
