//! Prints the CPU cost of one Argon2id password hash with Palisade's parameters
//! (m = 19 MiB, t = 2, p = 1): the floor under the hub's login latency.
//! Usage: cargo run --release -p palisade-crypto --example argon2_cost [ROUNDS]

use palisade_crypto::password::{Password, hash};
use std::time::Instant;

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let password = Password::new("orchid tractor velvet monsoon");
    let _ = hash(&password); // warm up
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            let _ = hash(&password);
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    println!("argon2id_hash_ms_median {median:.1}");
}
