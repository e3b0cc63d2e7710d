//! Online identification and state estimation for the governor's thermal model, as pure
//! numerical code (no time source, no I/O).
//!
//! The model is first order in discrete time with an integrating disturbance:
//! `T[k+1] = a·T[k] + b·P[k] + d[k]`, `d[k+1] = d[k] + w`. `a` and `b` capture the fast
//! die response to power and are identified by recursive least squares with forgetting on
//! the increments of prefiltered temperature and power (increments remove the unknown offset;
//! the same low-pass on both signals keeps the input-output relation and cuts sensor noise).
//! `d` absorbs everything slow or unknown (ambient temperature, the heatsink warming up, a fan
//! failing) and is tracked by a Kalman filter together with the temperature itself, which is
//! what makes the predictive controller offset-free.

/// Recursive least squares with exponential forgetting and a bounded covariance trace
/// (so that the covariance cannot wind up while the input is not exciting).
#[derive(Clone, Debug, PartialEq)]
pub struct Rls<const N: usize> {
    theta: [f64; N],
    p: [[f64; N]; N],
    lambda: f64,
    max_trace: f64,
}

impl<const N: usize> Rls<N> {
    /// Starts from the prior `theta0` with diagonal covariance `p0_diag`, forgetting factor
    /// `lambda` in `(0, 1]` and covariance trace bound `max_trace`.
    pub fn new(theta0: [f64; N], p0_diag: [f64; N], lambda: f64, max_trace: f64) -> Self {
        let mut p = [[0.0; N]; N];
        for (i, row) in p.iter_mut().enumerate() {
            row[i] = p0_diag[i];
        }
        Self {
            theta: theta0,
            p,
            lambda: lambda.clamp(0.5, 1.0),
            max_trace,
        }
    }

    /// Current estimate.
    pub fn theta(&self) -> [f64; N] {
        self.theta
    }

    /// Overrides the estimate (parameter projection after an update).
    pub fn set_theta(&mut self, theta: [f64; N]) {
        self.theta = theta;
    }

    /// Trace of the covariance (a scalar measure of remaining uncertainty).
    pub fn trace(&self) -> f64 {
        (0..N).map(|i| self.p[i][i]).sum()
    }

    /// One instrumental-variable update: regressor `phi`, instrument `zeta` (correlated with
    /// `phi` but not with the noise in `y` and `phi`), observation `y`. With `zeta == phi` this
    /// is ordinary least squares. Returns the a-priori prediction error.
    pub fn update_iv(&mut self, phi: &[f64; N], zeta: &[f64; N], y: f64) -> f64 {
        if !y.is_finite() || phi.iter().chain(zeta).any(|v| !v.is_finite()) {
            return 0.0;
        }
        let pred: f64 = (0..N).map(|i| self.theta[i] * phi[i]).sum();
        let err = y - pred;
        let mut pz = [0.0; N];
        for (i, out) in pz.iter_mut().enumerate() {
            *out = (0..N).map(|j| self.p[i][j] * zeta[j]).sum();
        }
        let mut phip = [0.0; N];
        for (j, out) in phip.iter_mut().enumerate() {
            *out = (0..N).map(|i| phi[i] * self.p[i][j]).sum();
        }
        let denom = self.lambda + (0..N).map(|i| phi[i] * pz[i]).sum::<f64>();
        if denom.abs() < 1e-12 || !denom.is_finite() {
            return err;
        }
        for (t, k) in self.theta.iter_mut().zip(pz) {
            *t += k / denom * err;
        }
        for (row, pzi) in self.p.iter_mut().zip(pz) {
            for (v, pj) in row.iter_mut().zip(phip) {
                *v = (*v - pzi * pj / denom) / self.lambda;
            }
        }
        self.bound_trace();
        err
    }

    fn bound_trace(&mut self) {
        let tr = self.trace();
        if tr > self.max_trace && tr.is_finite() {
            let s = self.max_trace / tr;
            for row in self.p.iter_mut() {
                for v in row.iter_mut() {
                    *v *= s;
                }
            }
        }
    }

    /// One update with regressor `phi` and observation `y`; returns the a-priori prediction
    /// error. Non-finite inputs are ignored (returns 0).
    pub fn update(&mut self, phi: &[f64; N], y: f64) -> f64 {
        if !y.is_finite() || phi.iter().any(|v| !v.is_finite()) {
            return 0.0;
        }
        let pred: f64 = (0..N).map(|i| self.theta[i] * phi[i]).sum();
        let err = y - pred;
        let mut pphi = [0.0; N];
        for (i, out) in pphi.iter_mut().enumerate() {
            *out = (0..N).map(|j| self.p[i][j] * phi[j]).sum();
        }
        let denom = self.lambda + (0..N).map(|i| phi[i] * pphi[i]).sum::<f64>();
        if denom <= 0.0 || !denom.is_finite() {
            return err;
        }
        for (t, pp) in self.theta.iter_mut().zip(pphi) {
            *t += pp / denom * err;
        }
        for i in 0..N {
            for j in 0..N {
                self.p[i][j] = (self.p[i][j] - pphi[i] * pphi[j] / denom) / self.lambda;
            }
        }
        // Keep P symmetric and bounded.
        for i in 0..N {
            for j in (i + 1)..N {
                let m = 0.5 * (self.p[i][j] + self.p[j][i]);
                self.p[i][j] = m;
                self.p[j][i] = m;
            }
        }
        self.bound_trace();
        err
    }
}

/// First-order thermal model `T[k+1] = a·T[k] + b·P[k] + d` at the nominal step `h`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThermalModel {
    /// Pole per nominal step (`exp(-h/τ)`).
    pub a: f64,
    /// Input gain per nominal step in K per W.
    pub b: f64,
}

impl ThermalModel {
    /// The model for a first-order system with time constant `tau_s` and steady-state gain
    /// `gain_k_per_w`, sampled every `h_s` seconds.
    pub fn from_physical(tau_s: f64, gain_k_per_w: f64, h_s: f64) -> Self {
        let a = (-h_s / tau_s).exp();
        Self {
            a,
            b: gain_k_per_w * (1.0 - a),
        }
    }

    /// Steady-state gain in K per W (`b / (1 − a)`).
    pub fn gain_k_per_w(&self) -> f64 {
        self.b / (1.0 - self.a).max(1e-9)
    }

    /// The same model over a step of `ratio` nominal steps (exact for zero-order-hold input).
    pub fn over(&self, ratio: f64) -> Self {
        let a = self.a.powf(ratio.max(0.0));
        let b = self.b * (1.0 - a) / (1.0 - self.a).max(1e-12);
        Self { a, b }
    }
}

/// Identifies [`ThermalModel`] online from fresh temperatures and the power of the preceding
/// period.
///
/// Updates run for 60 s after each input change whose expected temperature response stands out
/// of the sensor noise (long enough for a die's transient on every profile, short against a
/// heatsink's); a constant input or a change buried in noise carries no information and only
/// lets drift in. The model handed to the
/// controller follows the raw estimate through a low-pass, so one bad update cannot swing the
/// power budget, and it stays inside physically plausible bounds around the prior.
#[derive(Clone, Debug, PartialEq)]
pub struct Identifier {
    rls: Rls<2>,
    beta: f64,
    /// Prefiltered temperature at k-1 and k-2.
    yf: Option<(f64, f64)>,
    /// Prefiltered power at k-1 and k-2.
    uf: Option<(f64, f64)>,
    /// The model's own simulated temperature increment for step k-1 (noise-free).
    dy_model: f64,
    smoothed: ThermalModel,
    a_bounds: (f64, f64),
    gain_bounds: (f64, f64),
    window: u32,
    excited_for: u32,
    updates: u64,
}

/// Weight of each new estimate in the model handed to the controller.
const MODEL_SMOOTHING: f64 = 0.1;

impl Identifier {
    /// Starts from `prior` at nominal step `h_s` seconds. The time constant is kept within
    /// 0.25 ..= 200 s and the gain within 1/20 ..= 10 times the prior's.
    pub fn new(prior: ThermalModel, h_s: f64) -> Self {
        let tau_f = 0.75;
        let k0 = prior.gain_k_per_w();
        let steps = |s: f64| (s / h_s).ceil() as u32;
        Self {
            // Prior uncertainty: the pole within about ±0.1, the gain within about ±100 %.
            rls: Rls::new(
                [prior.a, prior.b],
                [0.01, prior.b * prior.b],
                0.995,
                10.0 * (0.01 + prior.b * prior.b),
            ),
            beta: 1.0 - (-h_s / tau_f).exp(),
            yf: None,
            uf: None,
            dy_model: 0.0,
            smoothed: prior,
            a_bounds: ((-h_s / 0.25).exp(), (-h_s / 200.0).exp()),
            gain_bounds: (k0 / 20.0, k0 * 10.0),
            window: steps(60.0),
            excited_for: 0,
            updates: 0,
        }
    }

    /// The model for control: the estimate through a low-pass.
    pub fn model(&self) -> ThermalModel {
        self.smoothed
    }

    /// The raw recursive estimate.
    pub fn raw_model(&self) -> ThermalModel {
        let [a, b] = self.rls.theta();
        ThermalModel { a, b }
    }

    /// Number of updates that carried excitation.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Forgets the signal history (after a gap in fresh readings); the model is kept.
    pub fn break_sequence(&mut self) {
        self.yf = None;
        self.uf = None;
        self.dy_model = 0.0;
    }

    /// Feeds the fresh temperature `y_c` at tick k, the mean power `u_prev_w` over the period
    /// that ended at tick k, and the sensor's noise variance `noise_var` (K²).
    pub fn observe(&mut self, y_c: f64, u_prev_w: f64, noise_var: f64) {
        let b = self.beta;
        // Filter u up to k-1, y up to k.
        let (u1, u2) = match self.uf {
            Some((u1, _)) => (u1 + b * (u_prev_w - u1), u1),
            None => (u_prev_w, u_prev_w),
        };
        let (y1, y2) = match self.yf {
            Some((y1, _)) => (y1 + b * (y_c - y1), y1),
            None => (y_c, y_c),
        };
        // Increments: dY_k = a·dY_{k-1} + b·dU_{k-1}, with (u1, u2) = (U_{k-1}, U_{k-2}) and
        // (py1, py2) = (Y_{k-1}, Y_{k-2}). Instrumental variables with an auxiliary model: the
        // instrument carries the model's own simulated increment instead of the measured one,
        // so sensor noise in the regressor does not bias `a` towards 0.
        if let (Some((py1, py2)), Some(_)) = (self.yf, self.uf) {
            let dy_k = y1 - py1;
            let dy_km1 = py1 - py2;
            let du_km1 = u1 - u2;
            let raw = self.raw_model();
            // Noise in one prefiltered increment, for white sensor noise.
            let noise_dy = (noise_var.max(0.0) * b * b * 2.0 / (2.0 - b)).sqrt();
            if (raw.b * du_km1).abs() >= (2.0 * noise_dy).max(0.02) {
                self.excited_for = self.window;
            }
            if self.excited_for > 0 {
                self.excited_for -= 1;
                // Weight each sample by the inverse of its noise, so a noisy sensor moves the
                // estimate away from the prior only as far as the data supports.
                let w = 1.0 / noise_dy.max(0.005);
                self.rls.update_iv(
                    &[w * dy_km1, w * du_km1],
                    &[w * self.dy_model, w * du_km1],
                    w * dy_k,
                );
                self.project();
                self.updates += 1;
                let r = self.raw_model();
                let s = &mut self.smoothed;
                s.a += MODEL_SMOOTHING * (r.a - s.a);
                s.b += MODEL_SMOOTHING * (r.b - s.b);
            }
            let m = self.raw_model();
            self.dy_model = m.a * self.dy_model + m.b * du_km1;
        }
        self.yf = Some((y1, y2));
        self.uf = Some((u1, u2));
    }

    fn project(&mut self) {
        let [a, b] = self.rls.theta();
        let a = if a.is_finite() {
            a.clamp(self.a_bounds.0, self.a_bounds.1)
        } else {
            self.smoothed.a
        };
        let one_minus_a = 1.0 - a;
        let gain = if b.is_finite() {
            (b / one_minus_a).clamp(self.gain_bounds.0, self.gain_bounds.1)
        } else {
            self.smoothed.gain_k_per_w()
        };
        self.rls.set_theta([a, gain * one_minus_a]);
    }
}

/// Kalman filter over `[T, d]` for the model `T' = a·T + b·P + d`, `d' = d + w`, with the
/// temperature measured directly.
#[derive(Clone, Debug, PartialEq)]
pub struct Observer {
    x: f64,
    d: f64,
    p: [[f64; 2]; 2],
    /// Process noise standard deviation of T per nominal step, in K.
    q_x: f64,
    /// Process noise of the steady-state offset per nominal step, in K.
    q_off: f64,
    /// Average normalised innovation squared (about 1 when the model and the noise figures
    /// are right).
    nis: f64,
    ready: bool,
}

impl Observer {
    /// A filter that initialises itself at the first measurement.
    pub fn new(q_x: f64, q_off: f64) -> Self {
        Self {
            x: 0.0,
            d: 0.0,
            p: [[1.0, 0.0], [0.0, 1.0]],
            q_x,
            q_off,
            nis: 1.0,
            ready: false,
        }
    }

    /// Whether a measurement has been absorbed yet.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Estimated temperature in °C.
    pub fn temperature(&self) -> f64 {
        self.x
    }

    /// Estimated disturbance per step.
    pub fn disturbance(&self) -> f64 {
        self.d
    }

    /// Standard deviation of the temperature estimate in K.
    pub fn temperature_std(&self) -> f64 {
        self.p[0][0].max(0.0).sqrt()
    }

    /// Starts at temperature `y` in equilibrium with power `u` under model `m`.
    pub fn reset(&mut self, y: f64, u: f64, m: ThermalModel, r: f64) {
        self.x = y;
        self.d = y * (1.0 - m.a) - m.b * u;
        let off = 4.0 * (1.0 - m.a);
        self.p = [[r.max(1e-4), 0.0], [0.0, off * off]];
        self.ready = true;
    }

    /// Time update over `ratio` nominal steps of the model `m` with power `u` in W.
    pub fn predict(&mut self, m: ThermalModel, u: f64, ratio: f64) {
        if !self.ready {
            return;
        }
        let md = m.over(ratio);
        // The disturbance is defined per nominal step; over `ratio` steps its effect on T is
        // d * (1 - a^r) / (1 - a).
        let gd = (1.0 - md.a) / (1.0 - m.a).max(1e-12);
        self.x = md.a * self.x + md.b * u + gd * self.d;
        let f = [[md.a, gd], [0.0, 1.0]];
        let p = self.p;
        // P = F P F^T + Q
        let fp = [
            [
                f[0][0] * p[0][0] + f[0][1] * p[1][0],
                f[0][0] * p[0][1] + f[0][1] * p[1][1],
            ],
            [p[1][0], p[1][1]],
        ];
        let mut np = [
            [fp[0][0] * f[0][0] + fp[0][1] * f[0][1], fp[0][1] * f[1][1]],
            [fp[1][0] * f[0][0] + fp[1][1] * f[0][1], fp[1][1]],
        ];
        // When innovations run larger than the filter expects (the model is off, as during a
        // fast heat-up on an unseen board), the process noise grows with them, so the estimate
        // keeps up with the readings and its stated uncertainty stays honest.
        let inflate = self.nis.clamp(1.0, 30.0) * ratio;
        let qd = self.q_off * (1.0 - m.a);
        np[0][0] += self.q_x * self.q_x * inflate;
        np[1][1] += qd * qd * inflate;
        np[0][1] = 0.5 * (np[0][1] + np[1][0]);
        np[1][0] = np[0][1];
        self.p = np;
    }

    /// Keeps the prediction continuous when the model changes from `old` to `new` while the
    /// input is `u`: the disturbance takes up the difference, so a parameter update never
    /// looks like a temperature step.
    pub fn rebase(&mut self, old: ThermalModel, new: ThermalModel, u: f64) {
        if self.ready {
            self.d += (old.a - new.a) * self.x + (old.b - new.b) * u;
        }
    }

    /// Measurement update with temperature `y` and measurement variance `r`; returns the
    /// innovation.
    pub fn update(&mut self, y: f64, r: f64) -> f64 {
        let nu = y - self.x;
        let s = self.p[0][0] + r;
        if s <= 0.0 || !s.is_finite() {
            return nu;
        }
        self.nis += 0.05 * ((nu * nu / s).min(100.0) - self.nis);
        let k0 = self.p[0][0] / s;
        let k1 = self.p[1][0] / s;
        self.x += k0 * nu;
        self.d += k1 * nu;
        let p = self.p;
        self.p = [
            [(1.0 - k0) * p[0][0], (1.0 - k0) * p[0][1]],
            [p[1][0] - k1 * p[0][0], p[1][1] - k1 * p[0][1]],
        ];
        self.p[0][1] = 0.5 * (self.p[0][1] + self.p[1][0]);
        self.p[1][0] = self.p[0][1];
        nu
    }
}

/// Estimates the sensor's noise variance from second differences of consecutive readings
/// (`Var(Δ²y) = 6σ²` for white noise, while a smooth thermal response has almost no second
/// difference). It starts pessimistic and averages its first samples equally, so it neither
/// trusts an unknown sensor nor takes long to learn it; later samples enter an exponential
/// average with clipped influence, so the jump of a die at a power step does not read as noise.
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseEstimator {
    prev: Option<(f64, Option<f64>)>,
    var: f64,
    samples: u32,
    alpha: f64,
    floor: f64,
}

impl NoiseEstimator {
    /// Starts at variance `initial` (K²), never reporting below `floor`.
    pub fn new(initial: f64, floor: f64) -> Self {
        Self {
            prev: None,
            var: initial,
            samples: 0,
            alpha: 0.02,
            floor,
        }
    }

    /// Current variance estimate in K².
    pub fn variance(&self) -> f64 {
        self.var.max(self.floor)
    }

    /// Forgets the sequence after a gap.
    pub fn break_sequence(&mut self) {
        self.prev = None;
    }

    /// Feeds the next consecutive reading `y`.
    pub fn observe(&mut self, y: f64) {
        self.prev = match self.prev {
            Some((y1, Some(y2))) => {
                let d2 = y - 2.0 * y1 + y2;
                let raw = d2 * d2 / 6.0;
                self.samples = self.samples.saturating_add(1);
                let n = f64::from(self.samples);
                if n <= 1.0 / self.alpha {
                    // Plain mean of the first samples (the pessimistic start counts as one).
                    self.var += (raw - self.var) / (n + 1.0);
                } else {
                    let sample = raw.min(9.0 * self.variance() + 0.01);
                    self.var += self.alpha * (sample - self.var);
                }
                Some((y, Some(y1)))
            }
            Some((y1, None)) => Some((y, Some(y1))),
            None => Some((y, None)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_recovers_the_parameters_of_a_noiseless_line() {
        let mut rls = Rls::new([0.0, 0.0], [1e6, 1e6], 1.0, 1e7);
        for k in 0..50 {
            let x = f64::from(k) * 0.1;
            rls.update(&[x, 1.0], 3.0 * x - 2.0);
        }
        let [m, c] = rls.theta();
        assert!((m - 3.0).abs() < 1e-3 && (c + 2.0).abs() < 1e-3, "{m} {c}");
    }

    #[test]
    fn least_squares_ignores_non_finite_samples() {
        let mut rls = Rls::new([1.0, 1.0], [1.0, 1.0], 0.99, 10.0);
        rls.update(&[f64::NAN, 1.0], 3.0);
        rls.update(&[1.0, 1.0], f64::INFINITY);
        assert_eq!(rls.theta(), [1.0, 1.0]);
    }

    #[test]
    fn covariance_trace_stays_bounded_without_excitation() {
        let mut rls = Rls::new([0.0, 0.0], [1.0, 1.0], 0.9, 5.0);
        for _ in 0..1000 {
            rls.update(&[0.0, 0.0], 0.0);
        }
        assert!(rls.trace() <= 5.0 + 1e-9);
    }

    #[test]
    fn identifier_learns_a_first_order_plant_from_power_steps() {
        let h = 0.25;
        let truth = ThermalModel::from_physical(3.0, 6.0, h);
        let mut id = Identifier::new(ThermalModel::from_physical(10.0, 2.0, h), h);
        let mut t = 30.0;
        for k in 0..2000 {
            let u = if (k / 60) % 2 == 0 { 2.0 } else { 7.0 };
            t = truth.a * t + truth.b * u + (1.0 - truth.a) * 25.0;
            id.observe(t, u, 1e-4);
        }
        let m = id.raw_model();
        assert!((m.a - truth.a).abs() < 0.01, "a {} vs {}", m.a, truth.a);
        assert!(
            (m.gain_k_per_w() - 6.0).abs() < 0.3,
            "gain {}",
            m.gain_k_per_w()
        );
    }

    #[test]
    fn observer_tracks_an_unknown_offset_without_bias() {
        let m = ThermalModel::from_physical(3.0, 5.0, 0.25);
        let mut obs = Observer::new(0.02, 0.05);
        obs.reset(40.0, 2.0, m, 0.01);
        // The true plant sits 8 K warmer than the model thinks (ambient change).
        let mut t = 40.0;
        for _ in 0..400 {
            t = m.a * t + m.b * 2.0 + (1.0 - m.a) * (30.0 + 8.0);
            obs.predict(m, 2.0, 1.0);
            obs.update(t, 0.01);
        }
        assert!((obs.temperature() - t).abs() < 0.05);
        let ss = (m.b * 2.0 + obs.disturbance()) / (1.0 - m.a);
        assert!((ss - t).abs() < 0.1, "steady state {ss} vs {t}");
    }

    #[test]
    fn noise_estimate_approaches_the_sensor_variance() {
        let mut ne = NoiseEstimator::new(0.01, 1e-4);
        // Deterministic pseudo-noise with variance 0.25 (uniform on ±0.866) on a slow ramp,
        // which must not count as noise.
        let mut s: u32 = 12345;
        for k in 0..5000 {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let v = (f64::from(s >> 8) / f64::from(1u32 << 24) - 0.5) * 2.0 * 0.866;
            ne.observe(60.0 + 0.01 * f64::from(k) + v);
        }
        let var = ne.variance();
        assert!((var - 0.25).abs() < 0.08, "variance {var}");
    }
}
