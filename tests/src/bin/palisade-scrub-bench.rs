//! `cargo xtask bench scrub`: what the credential scrubber costs per MiB of
//! answer, for plain text, text full of escape marks, and the red team's
//! guess-then-costly-escape text with a right and a wrong guess measured
//! side by side (their ratio must be 1: the scrubber's work must not say
//! how far a guess matched).

use std::{hint::black_box, time::Instant};

use palisade::gateway::spelled::replace;

const SECRET: &[u8] = b"sk_live_4eC39HqLyjWDarjtT1zdp7dc";
const MIB: usize = 1 << 20;

/// An escape costly to read from its start that never closes.
fn heavy() -> String {
    format!("&#x{}&", format!("&#x{}30;", "0".repeat(14)).repeat(16))
}

fn text(unit: &str) -> Vec<u8> {
    unit.repeat(MIB / unit.len() + 1).into_bytes()[..MIB].to_vec()
}

/// Median ms per MiB of each text, measured in interleaved rounds.
fn measure(texts: &[(&str, Vec<u8>)], rounds: usize) -> Vec<f64> {
    let mut ms: Vec<Vec<f64>> = vec![Vec::new(); texts.len()];
    for _ in 0..rounds {
        for (i, (_, t)) in texts.iter().enumerate() {
            let started = Instant::now();
            black_box(replace(black_box(t), SECRET, b"[redacted by palisade]"));
            ms[i].push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    ms.into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect()
}

fn main() {
    let right = &SECRET[..SECRET.len() - 1];
    let wrong: Vec<u8> = std::iter::once(b'x')
        .chain(right[1..].iter().copied())
        .collect();
    let as_str = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let texts = vec![
        ("plain text", text("a")),
        (
            "JSON",
            text(r#"{"id":"cus_123","email":"a@b.example","note":"ok\n"},"#),
        ),
        ("`%` repeated", text("%")),
        ("`&` repeated", text("&")),
        (
            "right guess + escape",
            text(&format!("{}{}", as_str(right), heavy())),
        ),
        (
            "wrong guess + escape",
            text(&format!("{}{}", as_str(&wrong), heavy())),
        ),
    ];
    let rounds = 41;
    let ms = measure(&texts, rounds);
    println!(
        "scrubber, {}-byte secret, median of {rounds} interleaved rounds",
        SECRET.len()
    );
    println!("| text | ms per MiB |");
    println!("|---|---|");
    for ((name, _), m) in texts.iter().zip(&ms) {
        println!("| {name} | {m:.2} |");
    }
    println!(
        "right ÷ wrong guess: {:.3} (1.000 means the scrubber's time says nothing)",
        ms[4] / ms[5]
    );
}
