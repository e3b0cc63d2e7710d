//! The footprint a response carries next to `usage`, from the eco accounting: the board's
//! energy over the request (the governor's meter: power sensor, RAPL or the power model,
//! named), shared among the generations that ran at once, turned into carbon, water, air
//! pollutants and wear by the configured [`Factors`]; plus, when the zombie-compute guard
//! stopped the answer, why and how much energy the stop avoided; and apart from those figures
//! the hidden layers (retrieval's memory when the job carried it, the model's declared
//! upstream share, waste). [`EcoAccounting`] also appends the CodeCarbon-compatible
//! `emissions.csv` row of each answer.

use std::path::PathBuf;
use std::sync::Mutex;

use serde::Serialize;

use crate::eco::emissions_csv::{self, RunInfo};
use crate::eco::guard::{GuardKind, GuardStop};
use crate::eco::layers::{
    IndexFootprint, Layers, MemoryCost, MemoryFootprint, UpstreamFootprint, UpstreamSettings, Waste,
};
use crate::eco::ledger::{DayTotals, Ledger, utc_date};
use crate::eco::{Factors, Footprint as EcoFootprint};

/// What the service measured of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestMeasure {
    /// Prompt tokens (all of them, cached ones included).
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Energy of the whole board over the request, J; `None` when the meter has no source.
    pub board_energy_j: Option<f64>,
    /// Where the energy figure came from (`power sensor ...`, `RAPL ...`, `power model`).
    pub energy_source: String,
    /// Wall time of the request from the worker's start, s.
    pub duration_s: f64,
    /// Equivalent wear hours of the board over the request.
    pub wear_hours: f64,
    /// Mean number of generations running at once while this one ran (>= 1).
    pub concurrency: f64,
    /// Prefill and decode time of the generation, s (the memory layer's prefill rate when the
    /// retrieval code gave none).
    pub prefill_decode_s: (f64, f64),
    /// The served model's folder name (the upstream layer's model card is matched on it).
    pub model: String,
    /// What retrieval cost the request and the searched index's footprint, when the request
    /// used retrieval (`None` today: see `serve::worker::Job::with_memory`).
    pub memory: Option<(MemoryCost, Option<IndexFootprint>)>,
}

/// Why the zombie-compute guard stopped an answer, as the response shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuardReport {
    /// The detector or budget: `cycle`, `stuck_token`, `entropy_collapse`,
    /// `no_new_content`, `token_budget`, `time_budget`, `energy_budget`, `carbon_budget`.
    pub kind: &'static str,
    /// A sentence saying why.
    pub reason: String,
    /// Tokens generated when it stopped.
    pub at_token: usize,
    /// Where the degenerate stretch began (token index), for the detectors.
    pub loop_start: Option<usize>,
    /// Energy the stop avoided, J (the remaining budget at the observed rate).
    pub avoided_j: Option<f64>,
}

/// The label of a guard stop's kind (Prometheus label value, JSON string).
pub fn guard_kind_label(kind: GuardKind) -> &'static str {
    match kind {
        GuardKind::Cycle => "cycle",
        GuardKind::StuckToken => "stuck_token",
        GuardKind::EntropyCollapse => "entropy_collapse",
        GuardKind::NoNewContent => "no_new_content",
        GuardKind::TokenBudget => "token_budget",
        GuardKind::TimeBudget => "time_budget",
        GuardKind::EnergyBudget => "energy_budget",
        GuardKind::CarbonBudget => "carbon_budget",
    }
}

impl From<&GuardStop> for GuardReport {
    fn from(s: &GuardStop) -> Self {
        GuardReport {
            kind: guard_kind_label(s.kind),
            reason: s.reason.clone(),
            at_token: s.at_token,
            loop_start: s.loop_start,
            avoided_j: s.avoided_j,
        }
    }
}

/// The `footprint` object of a response. Figures are `null` when the meter had no source.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ResponseFootprint {
    /// Tokens processed (prompt plus generated).
    pub tokens: usize,
    /// Energy attributed to the request at the board, J.
    pub energy_j: Option<f64>,
    /// Where the energy figure came from.
    pub energy_source: String,
    /// Operational emissions, g CO2e (central value).
    pub co2e_g: Option<f64>,
    /// Low and high ends of the emissions range, g CO2e.
    pub co2e_g_range: Option<[f64; 2]>,
    /// Embodied carbon amortised over the request's time, g CO2e.
    pub embodied_co2e_g: Option<f64>,
    /// Water consumed on site and by generation, mL.
    pub water_ml: Option<f64>,
    /// Nitrogen oxides, mg.
    pub nox_mg: Option<f64>,
    /// Sulphur dioxide, mg.
    pub so2_mg: Option<f64>,
    /// Fine particulate matter, mg.
    pub pm25_mg: Option<f64>,
    /// Hours at `wear_reference_c` that aged the SoC as much as this request.
    pub wear_hours: Option<f64>,
    /// The wear reference temperature, °C.
    pub wear_reference_c: f64,
    /// The grid region of the factors.
    pub region: String,
    /// How the figures were obtained.
    pub method: String,
    /// Set when the zombie-compute guard stopped the answer.
    pub guard: Option<GuardReport>,
    /// What retrieval cost, apart from the figures above (requests with retrieval only).
    pub memory: Option<MemoryFootprint>,
    /// The model's declared training share (declared, not measured; `declared: false` reads
    /// "not declared"), apart from the figures above.
    pub upstream: Option<UpstreamFootprint>,
    /// Energy of this answer that bought nothing (a degenerate answer the guard stopped): a
    /// part of `energy_j`, not more of it.
    pub wasted: Option<Waste>,
}

/// Eco accounting of the service: the factors in force and the `emissions.csv` it appends to.
#[derive(Debug)]
pub struct EcoAccounting {
    factors: Factors,
    csv: Option<(PathBuf, Mutex<()>)>,
    ledger: Option<Ledger>,
    upstream: UpstreamSettings,
}

impl EcoAccounting {
    /// Accounting with `factors`, appending a row per answer to `csv` when given.
    pub fn new(factors: Factors, csv: Option<PathBuf>) -> Self {
        EcoAccounting {
            factors,
            csv: csv.map(|p| (p, Mutex::new(()))),
            ledger: None,
            upstream: UpstreamSettings::default(),
        }
    }

    /// The same, with the upstream settings of `[eco]`.
    pub fn with_upstream(mut self, upstream: UpstreamSettings) -> Self {
        self.upstream = upstream;
        self
    }

    /// The same, adding every answer to the per-day totals of `ledger`.
    pub fn with_ledger(mut self, ledger: Ledger) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Today's (UTC) totals, when a ledger is kept and readable.
    pub fn today(&self) -> Option<DayTotals> {
        let ledger = self.ledger.as_ref()?;
        match ledger.day(&utc_date(std::time::SystemTime::now())) {
            Ok(t) => Some(t),
            Err(e) => {
                log::warn!("{e}");
                None
            }
        }
    }

    /// The factors in force.
    pub fn factors(&self) -> &Factors {
        &self.factors
    }

    /// The `emissions.csv` the rows go to, when one is written.
    pub fn csv_path(&self) -> Option<&std::path::Path> {
        self.csv.as_ref().map(|(p, _)| p.as_path())
    }

    /// The eco footprint of a measured request: the board's energy shared among the
    /// generations that ran at once, converted with the factors. `None` without energy.
    pub fn account(&self, m: &RequestMeasure) -> Option<EcoFootprint> {
        let energy =
            m.board_energy_j.filter(|j| j.is_finite() && *j >= 0.0)? / m.concurrency.max(1.0);
        let share = 1.0 / m.concurrency.max(1.0);
        Some(self.factors.footprint(
            energy,
            &m.energy_source,
            m.duration_s * share,
            (m.prompt_tokens + m.completion_tokens) as u64,
            m.wear_hours * share,
        ))
    }

    /// The hidden layers of a measured request: memory when it carried one (storage share
    /// over its share of the time), the upstream share of its tokens, and its waste. Memory
    /// and upstream are known without energy; waste needs the footprint.
    pub fn layers(
        &self,
        m: &RequestMeasure,
        eco: Option<&EcoFootprint>,
        guard: Option<&GuardStop>,
    ) -> Layers {
        let duration_s = eco.map_or(m.duration_s, |f| f.duration_s);
        Layers {
            memory: m.memory.as_ref().map(|(cost, index)| {
                if let Some((name, v)) = cost.invalid() {
                    log::warn!("retrieval reported {name} = {v}; counted as 0");
                }
                let cost = cost.with_answer_prefill(
                    eco.map_or(0.0, |f| f.energy_j),
                    m.prefill_decode_s.0,
                    m.prefill_decode_s.1,
                    m.prompt_tokens,
                );
                self.factors.memory(&cost, index.as_ref(), duration_s)
            }),
            upstream: Some(
                self.upstream
                    .resolve(&m.model)
                    .share((m.prompt_tokens + m.completion_tokens) as u64),
            ),
            waste: eco.and_then(|f| Waste::of_answer(f, guard)),
        }
    }

    /// The response's `footprint` object.
    pub fn response(
        &self,
        m: &RequestMeasure,
        eco: Option<&EcoFootprint>,
        guard: Option<&GuardStop>,
        layers: &Layers,
    ) -> ResponseFootprint {
        let tokens = m.prompt_tokens + m.completion_tokens;
        let method = match eco {
            Some(_) => format!(
                "board energy from {} over the request / {:.2} concurrent generations; \
                 factors for region {}",
                m.energy_source, m.concurrency, self.factors.region
            ),
            None => "no energy source: figures unknown".into(),
        };
        ResponseFootprint {
            tokens,
            energy_j: eco.map(|f| f.energy_j),
            energy_source: m.energy_source.clone(),
            co2e_g: eco.map(|f| f.g_co2e),
            co2e_g_range: eco.map(|f| [f.g_co2e_low, f.g_co2e_high]),
            embodied_co2e_g: eco.map(|f| f.embodied_g_co2e),
            water_ml: eco.map(|f| f.water_ml),
            nox_mg: eco.map(|f| f.nox_mg),
            so2_mg: eco.map(|f| f.so2_mg),
            pm25_mg: eco.map(|f| f.pm25_mg),
            wear_hours: eco.map(|f| f.wear_hours),
            wear_reference_c: self.factors.wear_reference_c,
            region: self.factors.region.clone(),
            method,
            guard: guard.map(GuardReport::from),
            memory: layers.memory.clone(),
            upstream: layers.upstream.clone(),
            wasted: layers.waste,
        }
    }

    /// Appends the answer's `emissions.csv` row and adds it with its hidden `layers` to
    /// today's totals (a failure is logged, never fatal).
    pub fn record(&self, fp: &EcoFootprint, layers: &Layers) {
        if let Some(ledger) = &self.ledger
            && let Err(e) =
                ledger.record_with_layers(&utc_date(std::time::SystemTime::now()), fp, layers)
        {
            log::warn!("{e}");
        }
        let Some((path, lock)) = &self.csv else {
            return;
        };
        let _one_writer = lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = emissions_csv::append_with_layers(
            path,
            &RunInfo::now("thermo-serve"),
            fp,
            layers,
            &self.factors,
        ) {
            log::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measure(energy: Option<f64>, concurrency: f64) -> RequestMeasure {
        RequestMeasure {
            prompt_tokens: 10,
            completion_tokens: 5,
            board_energy_j: energy,
            energy_source: "power sensor board".into(),
            duration_s: 3600.0,
            wear_hours: 2.0,
            concurrency,
            prefill_decode_s: (1.0, 3.0),
            model: "SmolLM2-135M-Instruct".into(),
            memory: None,
        }
    }

    #[test]
    fn one_watt_hour_alone_costs_the_world_grid_figures() {
        let acc = EcoAccounting::new(Factors::default(), None);
        let m = measure(Some(3600.0), 1.0);
        let eco = acc.account(&m);
        let fp = acc.response(&m, eco.as_ref(), None, &Layers::default());
        assert_eq!(fp.tokens, 15);
        assert_eq!(fp.energy_j, Some(3600.0));
        // 1 Wh = 0.001 kWh: 0.473 g CO2e and 4.81 mL of water on the world grid, on a board.
        assert!(
            (fp.co2e_g.unwrap_or_default() - 0.473).abs() < 1e-9,
            "{fp:?}"
        );
        assert!(
            (fp.water_ml.unwrap_or_default() - 4.81).abs() < 1e-9,
            "{fp:?}"
        );
        assert!(fp.nox_mg.is_some_and(|v| v > 0.0));
        assert_eq!(fp.wear_hours, Some(2.0));
        assert_eq!(fp.energy_source, "power sensor board");
        assert_eq!(fp.region, "world");
    }

    #[test]
    fn concurrent_generations_share_the_board_energy_and_wear() {
        let acc = EcoAccounting::new(Factors::default(), None);
        let eco = acc.account(&measure(Some(10.0), 2.0));
        assert_eq!(eco.as_ref().map(|f| f.energy_j), Some(5.0));
        assert_eq!(eco.map(|f| f.wear_hours), Some(1.0));
    }

    #[test]
    fn without_an_energy_source_the_figures_are_null() {
        let acc = EcoAccounting::new(Factors::default(), None);
        let m = measure(None, 1.0);
        let fp = acc.response(&m, acc.account(&m).as_ref(), None, &Layers::default());
        assert_eq!((fp.energy_j, fp.co2e_g, fp.water_ml), (None, None, None));
        let v = serde_json::to_value(&fp).unwrap_or_default();
        assert!(v["energy_j"].is_null());
        assert!(v["guard"].is_null());
    }

    #[test]
    fn a_guard_stop_shows_its_kind_reason_and_avoided_energy() {
        let acc = EcoAccounting::new(Factors::default(), None);
        let stop = GuardStop {
            kind: GuardKind::Cycle,
            reason: "a 3-token cycle repeated 6.0 times from token 4".into(),
            at_token: 22,
            loop_start: Some(4),
            avoided_j: Some(12.5),
        };
        let m = measure(Some(1.0), 1.0);
        let fp = acc.response(
            &m,
            acc.account(&m).as_ref(),
            Some(&stop),
            &Layers::default(),
        );
        let v = serde_json::to_value(&fp).unwrap_or_default();
        assert_eq!(v["guard"]["kind"], "cycle");
        assert_eq!(v["guard"]["avoided_j"], 12.5);
        assert_eq!(v["guard"]["loop_start"], 4);
    }

    #[test]
    fn every_answer_appends_an_emissions_row() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("emissions.csv");
        let acc = EcoAccounting::new(Factors::default(), Some(path.clone()));
        for _ in 0..2 {
            let fp = acc.account(&measure(Some(36.0), 1.0));
            if let Some(fp) = fp {
                acc.record(&fp, &Layers::default());
            }
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("emissions") && lines[0].contains("energy_consumed"));
        assert!(lines[1].contains("thermo-serve"));
    }

    #[test]
    fn a_request_with_retrieval_shows_its_memory_upstream_and_waste_apart() {
        let acc = EcoAccounting::new(Factors::default(), None).with_upstream(UpstreamSettings {
            amortise_tokens: 1e9,
            ..UpstreamSettings::default()
        });
        let mut m = measure(Some(36.0), 1.0);
        m.model = "Llama-2-7b-chat".into();
        m.memory = Some((
            MemoryCost {
                query_embed_j: 1.0,
                search_j: 0.5,
                extra_prompt_tokens: 200,
                prefill_j_per_token: 0.01,
            },
            Some(IndexFootprint {
                indexing_j: 50.0,
                disk_bytes: 1_000_000,
                resident_bytes: 0,
            }),
        ));
        let stop = GuardStop {
            kind: GuardKind::StuckToken,
            reason: String::new(),
            at_token: 5,
            loop_start: Some(1),
            avoided_j: None,
        };
        let eco = acc.account(&m);
        let layers = acc.layers(&m, eco.as_ref(), Some(&stop));
        let v = serde_json::to_value(acc.response(&m, eco.as_ref(), Some(&stop), &layers))
            .unwrap_or_default();
        assert_eq!(v["energy_j"], 36.0);
        assert_eq!(v["memory"]["extra_prompt_j"], 2.0);
        assert_eq!(v["memory"]["index"]["disk_bytes"], 1_000_000);
        assert_eq!(v["upstream"]["declared"], true);
        // 31.22 t over 1e9 tokens x 15 tokens = 0.4683 g.
        let g = v["upstream"]["training_g_co2e"]
            .as_f64()
            .unwrap_or(f64::NAN);
        assert!((g - 0.4683).abs() < 1e-9, "{v}");
        assert_eq!(v["wasted"]["kind"], "guard_stopped");
        assert_eq!(v["wasted"]["energy_j"], 36.0);
        let none = acc.layers(&measure(Some(1.0), 1.0), None, None);
        assert!(none.memory.is_none() && none.waste.is_none());
        assert_eq!(none.upstream.map(|u| u.declared), Some(false));
    }
}
