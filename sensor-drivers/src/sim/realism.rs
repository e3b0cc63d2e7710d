//! Sensor realism for the twin's sensors: seeded Gaussian noise, quantisation to the board's
//! resolution, latency, dropout and a value that freezes (stuck). All randomness comes from a
//! seeded SplitMix64 generator, so a run is reproducible.

use std::time::Duration;

use super::profile::Profile;

/// How a simulated sensor departs from the ground truth. The default is an ideal sensor.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SensorRealism {
    /// Standard deviation of additive Gaussian noise, in the sensor's unit (m°C or mW).
    pub noise_stddev: f64,
    /// Readings are rounded to a multiple of this, in the sensor's unit; 0 disables.
    pub quantum: i32,
    /// Readings show the state this long ago.
    pub latency: Duration,
    /// Probability (0 to 1) that a read fails with [`crate::SensorError::Unavailable`].
    pub dropout_probability: f64,
    /// From this simulated time on, the sensor repeats the value it read last.
    pub stuck_after: Option<Duration>,
    /// Seed of the noise and dropout generator.
    pub seed: u64,
}

impl SensorRealism {
    /// An ideal sensor: the ground truth, now.
    pub fn ideal() -> Self {
        SensorRealism::default()
    }

    /// The board's own temperature resolution from the profile, nothing else.
    pub fn board(profile: &Profile) -> Self {
        SensorRealism {
            quantum: profile.sensor.resolution_mc,
            ..SensorRealism::default()
        }
    }

    /// Adds Gaussian noise with this standard deviation.
    pub fn with_noise(mut self, stddev: f64) -> Self {
        self.noise_stddev = stddev.max(0.0);
        self
    }

    /// Rounds readings to multiples of `quantum`.
    pub fn with_quantum(mut self, quantum: i32) -> Self {
        self.quantum = quantum.max(0);
        self
    }

    /// Delays readings.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Fails reads with this probability.
    pub fn with_dropout(mut self, probability: f64) -> Self {
        self.dropout_probability = if probability.is_finite() {
            probability.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// Freezes the reading from this simulated time on.
    pub fn with_stuck_after(mut self, at: Duration) -> Self {
        self.stuck_after = Some(at);
        self
    }

    /// Seeds the generator.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// SplitMix64: a small, fast, seedable generator (not for cryptography).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator with the given seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn next_gaussian(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Rounds `value` to the nearest multiple of `quantum` (unchanged when `quantum` is 0).
pub fn quantise(value: f64, quantum: i32) -> f64 {
    if quantum <= 0 {
        value
    } else {
        let q = f64::from(quantum);
        (value / q).round() * q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantisation_rounds_to_the_nearest_step() {
        let cases = [
            (52_149.0, 50, 52_150.0),
            (52_124.0, 50, 52_100.0),
            (-1_260.0, 500, -1_500.0),
            (-1_240.0, 500, -1_000.0),
            (12_345.6, 0, 12_345.6),
        ];
        for (value, quantum, expected) in cases {
            assert_eq!(quantise(value, quantum), expected, "{value} / {quantum}");
        }
    }

    #[test]
    fn the_generator_is_reproducible_and_roughly_normal() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let n = 20_000;
        let samples: Vec<f64> = (0..n).map(|_| a.next_gaussian()).collect();
        let mean = samples.iter().sum::<f64>() / f64::from(n);
        let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / f64::from(n);
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
        assert_ne!(SplitMix64::new(8).next_u64(), SplitMix64::new(7).next_u64());
    }
}
