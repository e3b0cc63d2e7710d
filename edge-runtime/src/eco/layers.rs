//! The footprint's hidden layers, each kept apart from the measured operational figures of a
//! [`Footprint`] and never added into them:
//!
//! - *memory*: what local knowledge cost an answer: the joules of embedding the query and of
//!   the search (spent before the answer's own energy span, so outside it), the extra prompt
//!   tokens the retrieved text added and their estimated prefill joules (inside the answer's
//!   span: a part of its energy, not more of it), and the index's own figures with an
//!   embodied-carbon share of the flash storage it occupies;
//! - *upstream*: the model's declared training energy and emissions (and its teacher's or
//!   synthetic data's, when stated), from its model card or `[eco]`, amortised per token
//!   over a stated number of tokens served; "not declared" when nothing is published;
//! - *waste*: energy that bought nothing: an answer the zombie-compute guard stopped as
//!   degenerate, a training run that failed or stopped before its first step was saved.
//!
//! The retrieval code reports memory through `session::accounting::Accounting::set_memory`
//! (CLI) or `serve::worker::Job::with_memory` (service), one call per answer.

use serde::Serialize;

use super::config::{EcoConfig, Factors};
use super::factors::{self, BYTES_PER_GB, UPSTREAM_NOT_DECLARED};
use super::footprint::{Footprint, HOURS_PER_YEAR, J_PER_KWH, sig3};
use super::guard::GuardStop;

/// What retrieval cost one answer, as the retrieval code measured it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MemoryCost {
    /// Energy of embedding the query, J (measured around the encoder call).
    pub query_embed_j: f64,
    /// Energy of the search (vector scan, keyword query, fusion), J.
    pub search_j: f64,
    /// Prompt tokens the retrieved text added to the answer's prompt.
    pub extra_prompt_tokens: u64,
    /// Prefill energy per prompt token, J, at which the extra tokens are costed (e.g. a
    /// benchmark's figure); 0: estimated from the answer itself by
    /// [`MemoryCost::with_answer_prefill`] when the accounting takes it.
    pub prefill_j_per_token: f64,
}

impl MemoryCost {
    /// The same cost, with a `prefill_j_per_token` of 0 replaced by the answer's own rate:
    /// its energy `answer_j` times the prefill's share of its time (`prefill_s` of
    /// `prefill_s + decode_s`) over its `prompt_tokens`. Unchanged when the answer gives no
    /// such rate (no prompt tokens, no time).
    pub fn with_answer_prefill(
        mut self,
        answer_j: f64,
        prefill_s: f64,
        decode_s: f64,
        prompt_tokens: usize,
    ) -> MemoryCost {
        let total_s = prefill_s + decode_s;
        if self.prefill_j_per_token == 0.0 && prompt_tokens > 0 && total_s > 0.0 {
            let rate = answer_j * (prefill_s / total_s) / prompt_tokens as f64;
            if rate.is_finite() && rate >= 0.0 {
                self.prefill_j_per_token = rate;
            }
        }
        self
    }

    /// Estimated prefill energy of the extra prompt tokens, J (a part of the answer's energy).
    pub fn extra_prompt_j(&self) -> f64 {
        self.extra_prompt_tokens as f64 * self.prefill_j_per_token
    }

    /// Energy spent before the answer's span: query embedding plus search, J.
    pub fn outside_answer_j(&self) -> f64 {
        self.query_embed_j + self.search_j
    }

    /// The first figure that is negative or not finite, with its name.
    pub fn invalid(&self) -> Option<(&'static str, f64)> {
        [
            ("query_embed_j", self.query_embed_j),
            ("search_j", self.search_j),
            ("prefill_j_per_token", self.prefill_j_per_token),
        ]
        .into_iter()
        .find(|(_, v)| !(v.is_finite() && *v >= 0.0))
    }
}

/// One index's own footprint, as its store reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct IndexFootprint {
    /// Joules spent indexing over the index's life (the index's `indexing_j` meta value).
    pub indexing_j: f64,
    /// Bytes on disk (database and its write-ahead log).
    pub disk_bytes: u64,
    /// Bytes held in memory for search (e.g. the loaded vectors).
    pub resident_bytes: u64,
}

/// The memory layer of one answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemoryFootprint {
    /// Energy of embedding the query, J (outside the answer's span).
    pub query_embed_j: f64,
    /// Energy of the search, J (outside the answer's span).
    pub search_j: f64,
    /// Operational carbon of the query embedding and the search, g CO2e.
    pub g_co2e: f64,
    /// Prompt tokens the retrieved text added.
    pub extra_prompt_tokens: u64,
    /// Their estimated prefill energy, J: a part of the answer's measured energy.
    pub extra_prompt_j: f64,
    /// The index's own figures, when the retrieval code gave them.
    pub index: Option<IndexFootprint>,
    /// Embodied carbon of the flash the index occupies, amortised over the board's life and
    /// taken for the answer's duration, g CO2e (0 without index figures).
    pub storage_embodied_g_co2e: f64,
}

impl Factors {
    /// Embodied carbon of `bytes` of flash storage per hour of service, g CO2e/h: the flash
    /// factor amortised over the board's service life.
    pub fn storage_embodied_g_per_hour(&self, bytes: u64) -> f64 {
        bytes as f64 / BYTES_PER_GB * self.flash_kg_co2e_per_gb * 1000.0
            / (self.lifetime_years * HOURS_PER_YEAR)
    }

    /// The memory layer of an answer that lasted `duration_s`.
    pub fn memory(
        &self,
        cost: &MemoryCost,
        index: Option<&IndexFootprint>,
        duration_s: f64,
    ) -> MemoryFootprint {
        let clean = |v: f64| if v.is_finite() { v.max(0.0) } else { 0.0 };
        let (embed, search) = (clean(cost.query_embed_j), clean(cost.search_j));
        MemoryFootprint {
            query_embed_j: embed,
            search_j: search,
            g_co2e: (embed + search) * self.g_co2e_per_j()[0],
            extra_prompt_tokens: cost.extra_prompt_tokens,
            extra_prompt_j: clean(cost.extra_prompt_j()),
            index: index.copied(),
            storage_embodied_g_co2e: index.map_or(0.0, |i| {
                self.storage_embodied_g_per_hour(i.disk_bytes) * clean(duration_s) / 3600.0
            }),
        }
    }
}

/// Which model's upstream figures apply and how they are amortised, from `[eco]`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    /// A model card row to use instead of matching the model folder's name.
    pub model: Option<String>,
    /// Declared training energy set in `[eco]`, kWh.
    pub training_kwh: Option<f64>,
    /// Declared training emissions set in `[eco]`, t CO2e.
    pub training_t_co2e: Option<f64>,
    /// Declared teacher or synthetic-data energy set in `[eco]`, kWh.
    pub teacher_kwh: Option<f64>,
    /// Declared teacher or synthetic-data emissions set in `[eco]`, t CO2e.
    pub teacher_t_co2e: Option<f64>,
    /// Tokens served over which the declared figures are spread.
    pub amortise_tokens: f64,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings::from(&EcoConfig::default())
    }
}

impl From<&EcoConfig> for UpstreamSettings {
    fn from(c: &EcoConfig) -> Self {
        UpstreamSettings {
            model: c.upstream_model.clone(),
            training_kwh: c.upstream_training_kwh,
            training_t_co2e: c.upstream_training_t_co2e,
            teacher_kwh: c.upstream_teacher_kwh,
            teacher_t_co2e: c.upstream_teacher_t_co2e,
            amortise_tokens: c.upstream_amortise_tokens,
        }
    }
}

/// The declared upstream totals of one model, before amortisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// The model as the figures name it (card name, or the folder's name).
    pub model: String,
    /// Where the figures come from: the card, `[eco]`, or why there are none.
    pub source: String,
    /// Training energy, kWh.
    pub training_kwh: Option<f64>,
    /// Training emissions, t CO2e.
    pub training_t_co2e: Option<f64>,
    /// Teacher or synthetic-data energy, kWh.
    pub teacher_kwh: Option<f64>,
    /// Teacher or synthetic-data emissions, t CO2e.
    pub teacher_t_co2e: Option<f64>,
    /// Tokens served the totals are spread over.
    pub amortise_tokens: f64,
}

impl UpstreamSettings {
    /// The upstream totals of the model in a folder named `model_name`: figures set in
    /// `[eco]` win (declared by the user), else the card row `[eco] upstream_model` names or
    /// the folder's name matches, else nothing declared.
    pub fn resolve(&self, model_name: &str) -> Upstream {
        let amortise_tokens = self.amortise_tokens;
        let user = [
            self.training_kwh,
            self.training_t_co2e,
            self.teacher_kwh,
            self.teacher_t_co2e,
        ];
        if user.iter().any(Option::is_some) {
            return Upstream {
                model: self.model.clone().unwrap_or_else(|| model_name.to_string()),
                source: "declared in [eco] by the user".into(),
                training_kwh: self.training_kwh,
                training_t_co2e: self.training_t_co2e,
                teacher_kwh: self.teacher_kwh,
                teacher_t_co2e: self.teacher_t_co2e,
                amortise_tokens,
            };
        }
        let card = factors::upstream_card(self.model.as_deref().unwrap_or(model_name));
        let value = |f: Option<factors::Factor>| f.map(|f| f.value);
        match card {
            Some(c) => Upstream {
                model: c.name.into(),
                source: c
                    .training_kwh
                    .or(c.training_t_co2e)
                    .map_or(UPSTREAM_NOT_DECLARED, |f| f.source)
                    .into(),
                training_kwh: value(c.training_kwh),
                training_t_co2e: value(c.training_t_co2e),
                teacher_kwh: value(c.teacher_kwh),
                teacher_t_co2e: value(c.teacher_t_co2e),
                amortise_tokens,
            },
            None => Upstream {
                model: model_name.to_string(),
                source: "no model card figures known; set eco.upstream_training_kwh or \
                         eco.upstream_training_t_co2e"
                    .into(),
                training_kwh: None,
                training_t_co2e: None,
                teacher_kwh: None,
                teacher_t_co2e: None,
                amortise_tokens,
            },
        }
    }
}

/// The upstream layer of one answer: declared figures amortised over its tokens.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamFootprint {
    /// The model.
    pub model: String,
    /// Whether any figure is declared; `false` reads "not declared", never zero.
    pub declared: bool,
    /// Where the figures come from.
    pub source: String,
    /// Tokens of the answer the share is taken for.
    pub tokens: u64,
    /// Tokens served the declared totals are spread over.
    pub amortise_tokens: f64,
    /// Declared training energy's share, J.
    pub training_j: Option<f64>,
    /// Declared training emissions' share, g CO2e.
    pub training_g_co2e: Option<f64>,
    /// Declared teacher or synthetic-data energy's share, J.
    pub teacher_j: Option<f64>,
    /// Declared teacher or synthetic-data emissions' share, g CO2e.
    pub teacher_g_co2e: Option<f64>,
}

impl Upstream {
    /// The share of `tokens`.
    pub fn share(&self, tokens: u64) -> UpstreamFootprint {
        let k = if self.amortise_tokens > 0.0 {
            tokens as f64 / self.amortise_tokens
        } else {
            0.0
        };
        let j = |kwh: Option<f64>| kwh.map(|v| v * J_PER_KWH * k);
        let g = |t: Option<f64>| t.map(|v| v * 1e6 * k);
        let training_j = j(self.training_kwh);
        let training_g_co2e = g(self.training_t_co2e);
        let teacher_j = j(self.teacher_kwh);
        let teacher_g_co2e = g(self.teacher_t_co2e);
        UpstreamFootprint {
            model: self.model.clone(),
            declared: [training_j, training_g_co2e, teacher_j, teacher_g_co2e]
                .iter()
                .any(Option::is_some),
            source: self.source.clone(),
            tokens,
            amortise_tokens: self.amortise_tokens,
            training_j,
            training_g_co2e,
            teacher_j,
            teacher_g_co2e,
        }
    }
}

impl UpstreamFootprint {
    /// Declared energy, training and teacher together, J (`None`: not declared).
    pub fn energy_j(&self) -> Option<f64> {
        sum_known([self.training_j, self.teacher_j])
    }

    /// Declared emissions, training and teacher together, g CO2e (`None`: not declared).
    pub fn g_co2e(&self) -> Option<f64> {
        sum_known([self.training_g_co2e, self.teacher_g_co2e])
    }
}

fn sum_known(v: [Option<f64>; 2]) -> Option<f64> {
    v.iter().flatten().copied().reduce(|a, b| a + b)
}

/// Why energy counts as wasted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WasteKind {
    /// The zombie-compute guard stopped the answer as degenerate (a loop, a stuck token,
    /// collapsed entropy, nothing new); a budget stop is not waste.
    GuardStopped,
    /// The training run failed; the energy since its last checkpoint is lost.
    TrainingFailed,
    /// The training run stopped before it finished a step, so nothing it did was saved.
    TrainingStoppedEarly,
}

impl WasteKind {
    /// The name used in CSV cells and telemetry.
    pub fn as_str(self) -> &'static str {
        match self {
            WasteKind::GuardStopped => "guard_stopped",
            WasteKind::TrainingFailed => "training_failed",
            WasteKind::TrainingStoppedEarly => "training_stopped_early",
        }
    }
}

/// Energy that bought nothing: a part of an answer's or a run's measured figures, shown as
/// such, never added to them again.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Waste {
    /// Why.
    pub kind: WasteKind,
    /// Energy, J.
    pub energy_j: f64,
    /// Operational carbon of that energy, g CO2e.
    pub g_co2e: f64,
}

impl Waste {
    /// The waste of an answer `stop` ended: all of its energy when the guard stopped it as
    /// degenerate, none for a budget stop or no stop.
    pub fn of_answer(fp: &Footprint, stop: Option<&GuardStop>) -> Option<Waste> {
        stop.filter(|s| s.kind.is_degenerate()).map(|_| Waste {
            kind: WasteKind::GuardStopped,
            energy_j: fp.energy_j,
            g_co2e: fp.g_co2e,
        })
    }

    /// `share` (0 to 1) of a training run's footprint, for `kind`.
    pub fn of_run(fp: &Footprint, kind: WasteKind, share: f64) -> Waste {
        let share = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            1.0
        };
        Waste {
            kind,
            energy_j: fp.energy_j * share,
            g_co2e: fp.g_co2e * share,
        }
    }
}

/// The hidden layers of one answer or run; each absent when it does not apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Layers {
    /// What retrieval cost (answers with retrieval only).
    pub memory: Option<MemoryFootprint>,
    /// The declared upstream share (answers only).
    pub upstream: Option<UpstreamFootprint>,
    /// Energy that bought nothing.
    pub waste: Option<Waste>,
}

impl Layers {
    /// The first figure that is not a finite number, with its name (never stored).
    pub fn non_finite(&self) -> Option<(&'static str, f64)> {
        let mut all: Vec<(&'static str, f64)> = vec![];
        if let Some(m) = &self.memory {
            all.extend([
                ("memory.query_embed_j", m.query_embed_j),
                ("memory.search_j", m.search_j),
                ("memory.g_co2e", m.g_co2e),
                ("memory.extra_prompt_j", m.extra_prompt_j),
                ("memory.storage_embodied_g_co2e", m.storage_embodied_g_co2e),
            ]);
            if let Some(i) = &m.index {
                all.push(("memory.index.indexing_j", i.indexing_j));
            }
        }
        if let Some(u) = &self.upstream {
            for (name, v) in [
                ("upstream.training_j", u.training_j),
                ("upstream.training_g_co2e", u.training_g_co2e),
                ("upstream.teacher_j", u.teacher_j),
                ("upstream.teacher_g_co2e", u.teacher_g_co2e),
            ] {
                all.extend(v.map(|v| (name, v)));
            }
        }
        if let Some(w) = &self.waste {
            all.extend([("waste.energy_j", w.energy_j), ("waste.g_co2e", w.g_co2e)]);
        }
        all.into_iter().find(|(_, v)| !v.is_finite())
    }

    /// The layers as text for the footprint line, `None` when there is nothing to show.
    pub fn line(&self) -> Option<String> {
        let mut parts = vec![];
        if let Some(m) = &self.memory {
            let mut s = format!(
                "memory {} J embed + {} J search ({} g CO2e), {} retrieved prompt tokens \
                 ~{} J of the answer",
                sig3(m.query_embed_j),
                sig3(m.search_j),
                sig3(m.g_co2e),
                m.extra_prompt_tokens,
                sig3(m.extra_prompt_j),
            );
            if let Some(i) = &m.index {
                s.push_str(&format!(
                    "; index {} MB on disk, {} MB resident, {} J indexing, {} g embodied \
                     storage share",
                    sig3(i.disk_bytes as f64 / 1e6),
                    sig3(i.resident_bytes as f64 / 1e6),
                    sig3(i.indexing_j),
                    sig3(m.storage_embodied_g_co2e),
                ));
            }
            parts.push(s);
        }
        if let Some(u) = &self.upstream {
            parts.push(upstream_text(u));
        }
        if let Some(w) = &self.waste {
            parts.push(format!(
                "wasted {} J, {} g CO2e ({})",
                sig3(w.energy_j),
                sig3(w.g_co2e),
                w.kind.as_str()
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

fn upstream_text(u: &UpstreamFootprint) -> String {
    if !u.declared {
        return format!("upstream {}: not declared", u.model);
    }
    let known = |v: Option<f64>, unit: &str| v.map_or("not declared".into(), |v| sig3(v) + unit);
    let mut s = format!(
        "upstream {} (declared, over {:.0e} tokens): training {}, {}",
        u.model,
        u.amortise_tokens,
        known(u.training_j, " J"),
        known(u.training_g_co2e, " g CO2e"),
    );
    if u.teacher_j.is_some() || u.teacher_g_co2e.is_some() {
        s.push_str(&format!(
            "; teacher {}, {}",
            known(u.teacher_j, " J"),
            known(u.teacher_g_co2e, " g CO2e")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eco::guard::GuardKind;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1e-12)
    }

    #[test]
    fn retrieval_costs_its_embedding_search_and_prompt_tokens_apart() {
        let f = Factors::default();
        let cost = MemoryCost {
            query_embed_j: 0.5,
            search_j: 0.25,
            extra_prompt_tokens: 300,
            prefill_j_per_token: 0.02,
        };
        let m = f.memory(&cost, None, 10.0);
        assert!(close(m.extra_prompt_j, 6.0), "{m:?}");
        // 0.75 J at 473 g/kWh: 0.75 / 3.6e6 x 473 g.
        assert!(close(m.g_co2e, 0.75 / 3.6e6 * 473.0), "{m:?}");
        assert_eq!(m.storage_embodied_g_co2e, 0.0);
        assert!(m.index.is_none());
    }

    #[test]
    fn a_zero_prefill_rate_is_taken_from_the_answer_itself() {
        let cost = MemoryCost {
            extra_prompt_tokens: 50,
            ..MemoryCost::default()
        };
        // 30 J over 1 s prefill + 2 s decode: 10 J of prefill over 100 prompt tokens.
        let c = cost.with_answer_prefill(30.0, 1.0, 2.0, 100);
        assert!(close(c.prefill_j_per_token, 0.1), "{c:?}");
        assert!(close(c.extra_prompt_j(), 5.0), "{c:?}");
        let given = MemoryCost {
            prefill_j_per_token: 0.5,
            ..cost
        };
        assert_eq!(given.with_answer_prefill(30.0, 1.0, 2.0, 100), given);
        assert_eq!(cost.with_answer_prefill(30.0, 0.0, 0.0, 100), cost);
    }

    #[test]
    fn an_index_takes_its_flash_share_over_the_boards_life() {
        let f = Factors::default();
        let index = IndexFootprint {
            indexing_j: 900.0,
            disk_bytes: 2_000_000_000,
            resident_bytes: 50_000_000,
        };
        // 2 GB x 0.16 kg = 320 g over 5 years (43830 h): 0.00730093 g/h; one hour of answer.
        let m = f.memory(&MemoryCost::default(), Some(&index), 3600.0);
        assert!(close(m.storage_embodied_g_co2e, 320.0 / 43_830.0), "{m:?}");
        assert_eq!(m.index.map(|i| i.indexing_j), Some(900.0));
    }

    #[test]
    fn hostile_memory_figures_are_named_and_never_counted() {
        let bad = MemoryCost {
            search_j: f64::NAN,
            ..MemoryCost::default()
        };
        assert_eq!(bad.invalid().map(|(n, _)| n), Some("search_j"));
        let m = Factors::default().memory(&bad, None, f64::INFINITY);
        assert_eq!(m.search_j, 0.0);
        let layers = Layers {
            memory: Some(m),
            ..Layers::default()
        };
        assert!(layers.non_finite().is_none());
    }

    #[test]
    fn a_llama_2_7b_answer_carries_its_declared_share_over_the_stated_tokens() {
        let s = UpstreamSettings {
            amortise_tokens: 1e9,
            ..UpstreamSettings::default()
        };
        let up = s.resolve("Llama-2-7b-chat-q4").share(1000);
        assert!(up.declared);
        // 73728 kWh x 3.6e6 J x 1000 / 1e9 = 265420.8 J; 31.22 t x 1e6 g x 1e-6 = 31.22 g.
        assert!(
            close(up.training_j.unwrap_or(f64::NAN), 265_420.8),
            "{up:?}"
        );
        assert!(
            close(up.training_g_co2e.unwrap_or(f64::NAN), 31.22),
            "{up:?}"
        );
        assert_eq!(up.teacher_j, None);
        assert!(up.source.contains("Llama 2 model card"));
    }

    #[test]
    fn a_model_without_published_figures_is_not_declared_not_zero() {
        let up = UpstreamSettings::default()
            .resolve("SmolLM2-135M-Instruct")
            .share(50);
        assert!(!up.declared);
        assert_eq!((up.energy_j(), up.g_co2e()), (None, None));
        let text = Layers {
            upstream: Some(up),
            ..Layers::default()
        }
        .line()
        .unwrap_or_default();
        assert!(text.contains("not declared"), "{text}");
    }

    #[test]
    fn figures_set_in_eco_win_and_are_labelled_as_the_users() {
        let s = UpstreamSettings {
            training_t_co2e: Some(2.0),
            amortise_tokens: 1e6,
            ..UpstreamSettings::default()
        };
        let up = s.resolve("Llama-2-7b").share(10);
        assert!(up.source.contains("[eco]"));
        // 2 t = 2e6 g over 1e6 tokens: 2 g per token, 20 g for 10.
        assert_eq!(up.g_co2e(), Some(20.0));
        assert_eq!(up.training_j, None);
    }

    #[test]
    fn only_a_degenerate_stop_wastes_the_answer() {
        let fp = Footprint {
            energy_j: 12.0,
            g_co2e: 0.5,
            ..Footprint::default()
        };
        let stop = |kind| GuardStop {
            kind,
            reason: String::new(),
            at_token: 40,
            loop_start: None,
            avoided_j: None,
        };
        let w = Waste::of_answer(&fp, Some(&stop(GuardKind::Cycle)));
        assert_eq!(
            w.map(|w| (w.kind, w.energy_j)),
            Some((WasteKind::GuardStopped, 12.0))
        );
        assert!(Waste::of_answer(&fp, Some(&stop(GuardKind::TokenBudget))).is_none());
        assert!(Waste::of_answer(&fp, None).is_none());
        let run = Waste::of_run(&fp, WasteKind::TrainingFailed, 0.25);
        assert_eq!((run.energy_j, run.g_co2e), (3.0, 0.125));
    }
}
