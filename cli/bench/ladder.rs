//! `streamctl bench --spawn --rates R1,R2,...`: a ladder of rates, each run against
//! fresh servers. At each rate the systems alternate which goes first over the
//! repetitions (ABBA: streamd then nats, then nats then streamd, ...), so that neither
//! always runs on a machine the other has just warmed or tired. A system stops climbing
//! after a rate it did not sustain in some run (it still finishes that rate's
//! repetitions, so every pair is complete); the other climbs on. Every run is one JSON
//! line; the summary gives each system's highest sustained rate and, per rate, the
//! median and range of the paired per-run ratios.

use std::time::Duration;

use serde::Serialize;

use super::report::{Report, System, rate_name, ratio};

/// What sustaining a rate takes: the run complete, nothing lost, and a p99 latency
/// under a bar (100 ms unless --sustained-p99 says).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sustained {
    pub p99_under: Duration,
}

impl Sustained {
    /// Whether a run sustained its rate.
    pub fn by(&self, report: &Report) -> bool {
        report.ok && report.lost == 0 && report.latency.p99_us < self.p99_under.as_secs_f64() * 1e6
    }
}

/// One run of the ladder, as its JSON line shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// When the run ended, UTC.
    pub date: String,
    /// The repetition at this rate, from 0.
    pub rep: usize,
    /// Whether this system went first (0) or second (1) in its repetition.
    pub order: usize,
    #[serde(flatten)]
    pub report: Report,
}

/// The order the systems run in for repetition `rep`: as given on even ones,
/// reversed on odd ones.
pub fn order(rep: usize, systems: &[System]) -> Vec<System> {
    let mut systems = systems.to_vec();
    if rep % 2 == 1 {
        systems.reverse();
    }
    systems
}

/// Climbs `rates` with `systems`, `repeat` runs of each at each rate, calling `run`
/// for each run and `emit` with its record as soon as it is done.
pub async fn climb<R, F, E>(
    rates: &[u64],
    repeat: usize,
    systems: &[System],
    sustained: Sustained,
    mut run: R,
    mut emit: E,
) -> Result<Vec<Record>, crate::error::Error>
where
    R: FnMut(System, u64) -> F,
    F: Future<Output = Report>,
    E: FnMut(&Record) -> Result<(), crate::error::Error>,
{
    let mut climbing = systems.to_vec();
    let mut records = Vec::new();
    for &rate in rates {
        if climbing.is_empty() {
            break;
        }
        let mut failed = Vec::new();
        for rep in 0..repeat {
            for (position, system) in order(rep, &climbing).into_iter().enumerate() {
                let report = run(system, rate).await;
                if !sustained.by(&report) && !failed.contains(&system) {
                    failed.push(system);
                }
                let record = Record {
                    date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    rep,
                    order: position,
                    report,
                };
                emit(&record)?;
                records.push(record);
            }
        }
        climbing.retain(|system| !failed.contains(system));
    }
    Ok(records)
}

/// Median, least and greatest of some figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// How many figures (pairs) there were.
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(mut values: Vec<f64>) -> Option<Self> {
        values.retain(|v| v.is_finite());
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Some(Self {
            n,
            median,
            min: values[0],
            max: values[n - 1],
        })
    }
}

/// The paired ratios (streamd over nats) at one rate, from the repetitions where both
/// runs were ok.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairedRatios {
    pub delivered_rate: Option<Spread>,
    pub server_cpu_ns_per_delivered: Option<Spread>,
    pub p99: Option<Spread>,
}

/// One system's runs at one rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Runs {
    pub runs: usize,
    pub sustained: usize,
    /// Each run's loss, in run order.
    pub lost: Vec<u64>,
    pub ok: Vec<bool>,
}

/// One rate of the ladder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rung {
    pub rate: u64,
    pub streamd: Option<Runs>,
    pub nats: Option<Runs>,
    pub ratios: Option<PairedRatios>,
}

/// The highest rate a system sustained in every run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Highest {
    pub rate: Option<u64>,
    /// It sustained the ladder's top rate, so its limit lies above the ladder.
    pub top_of_ladder: bool,
}

/// What the ladder found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub streamd: Highest,
    pub nats: Option<Highest>,
    /// streamd's highest sustained rate over nats's.
    pub ratio: Option<f64>,
    pub rates: Vec<Rung>,
    /// The p99 latency a sustained run stayed under.
    pub sustained_p99_ms: f64,
}

impl Summary {
    pub fn of(rates: &[u64], systems: &[System], records: &[Record], sustained: Sustained) -> Self {
        let runs_of = |system: System, rate: u64| -> Vec<&Report> {
            records
                .iter()
                .map(|r| &r.report)
                .filter(|r| r.system == system && r.rate == rate)
                .collect()
        };
        let highest = |system: System| {
            let rate = rates
                .iter()
                .copied()
                .filter(|&rate| {
                    let runs = runs_of(system, rate);
                    !runs.is_empty() && runs.iter().all(|r| sustained.by(r))
                })
                .max();
            Highest {
                rate,
                top_of_ladder: rate.is_some() && rate == rates.iter().copied().max(),
            }
        };
        let with_nats = systems.contains(&System::Nats);
        let rungs = rates
            .iter()
            .map(|&rate| {
                let runs = |system| {
                    let runs = runs_of(system, rate);
                    (!runs.is_empty()).then(|| Runs {
                        runs: runs.len(),
                        sustained: runs.iter().filter(|r| sustained.by(r)).count(),
                        lost: runs.iter().map(|r| r.lost).collect(),
                        ok: runs.iter().map(|r| r.ok).collect(),
                    })
                };
                let (streamd, nats) = (runs(System::Streamd), runs(System::Nats));
                let ratios =
                    (streamd.is_some() && nats.is_some()).then(|| paired_ratios(records, rate));
                Rung {
                    rate,
                    streamd,
                    nats,
                    ratios,
                }
            })
            .collect();
        let streamd = highest(System::Streamd);
        let nats = with_nats.then(|| highest(System::Nats));
        let ratio = match (&streamd.rate, nats.as_ref().and_then(|n| n.rate)) {
            (Some(ours), Some(theirs)) => ratio(*ours as f64, theirs as f64),
            _ => None,
        };
        Summary {
            streamd,
            nats,
            ratio,
            rates: rungs,
            sustained_p99_ms: sustained.p99_under.as_secs_f64() * 1e3,
        }
    }

    /// The summary as an aligned table.
    pub fn table(&self) -> String {
        let highest = |h: &Highest| match h.rate {
            Some(rate) if h.top_of_ladder => {
                format!("≥ {} (the top of the ladder)", rate_name(rate))
            }
            Some(rate) => rate_name(rate),
            None => "none of the rates".into(),
        };
        let mut out = String::new();
        // A full-speed run has no rate to sustain.
        if self.rates.iter().any(|r| r.rate > 0) {
            out = format!("highest sustained rate: streamd {}", highest(&self.streamd));
            if let Some(nats) = &self.nats {
                out.push_str(&format!(", nats {}", highest(nats)));
                if let Some(ratio) = self.ratio {
                    out.push_str(&format!(", streamd/nats {ratio:.2}×"));
                }
            }
            out.push_str(&format!(
                "\n(sustained: every run complete, nothing lost, p99 < {} ms)\n\n",
                self.sustained_p99_ms
            ));
        }
        let runs = |runs: &Option<Runs>| match runs {
            Some(r) => format!(
                "{}/{} (lost {})",
                r.sustained,
                r.runs,
                r.lost
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => "—".into(),
        };
        let spread = |s: &Option<Spread>| match s {
            Some(s) => format!("{:.2}× ({:.2}–{:.2}, {})", s.median, s.min, s.max, s.n),
            None => "—".into(),
        };
        let mut lines = vec![vec![
            "rate".to_string(),
            "streamd sustained".into(),
            "nats sustained".into(),
            "delivered/s ratio".into(),
            "CPU/delivered ratio".into(),
            "p99 ratio".into(),
        ]];
        for rung in &self.rates {
            let (delivered, cpu, p99) = match &rung.ratios {
                Some(r) => (
                    spread(&r.delivered_rate),
                    spread(&r.server_cpu_ns_per_delivered),
                    spread(&r.p99),
                ),
                None => ("—".into(), "—".into(), "—".into()),
            };
            lines.push(vec![
                rate_name(rung.rate),
                runs(&rung.streamd),
                runs(&rung.nats),
                delivered,
                cpu,
                p99,
            ]);
        }
        out.push_str(&super::report::align(&lines));
        out.push_str(
            "\nratios: streamd/nats per repetition where both runs were ok: median (min–max, pairs)\n",
        );
        out
    }
}

/// The ratios of the runs paired by repetition at `rate`, both ok.
fn paired_ratios(records: &[Record], rate: u64) -> PairedRatios {
    let at = |system: System, rep: usize| {
        records.iter().find(|r| {
            r.report.system == system && r.report.rate == rate && r.rep == rep && r.report.ok
        })
    };
    let pairs: Vec<(&Report, &Report)> = records
        .iter()
        .filter(|r| r.report.rate == rate && r.report.system == System::Streamd)
        .filter_map(|ours| Some((&ours.report, &at(System::Nats, ours.rep)?.report)))
        .filter(|(ours, _)| ours.ok)
        .collect();
    let ratios = |figure: fn(&Report) -> Option<f64>| {
        Spread::of(
            pairs
                .iter()
                .filter_map(|(ours, theirs)| ratio(figure(ours)?, figure(theirs)?))
                .collect(),
        )
    };
    PairedRatios {
        delivered_rate: ratios(|r| Some(r.delivered_rate)),
        server_cpu_ns_per_delivered: ratios(|r| r.server_cpu_ns_per_delivered),
        p99: ratios(|r| Some(r.latency.p99_us)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::tests::plan;

    /// A report of `system` at `rate` that lost `lost` and had this p99 and rate.
    fn report(system: System, rate: u64, lost: u64, p99_ms: f64, delivered_rate: f64) -> Report {
        let mut r = Report::failed(
            system,
            &plan(&["--rate", &rate.to_string()]).unwrap(),
            String::new(),
        );
        r.error = None;
        r.ok = lost == 0;
        r.lost = lost;
        r.latency.p99_us = p99_ms * 1000.0;
        r.delivered_rate = delivered_rate;
        r
    }

    #[test]
    fn repetitions_alternate_which_system_goes_first() {
        let both = [System::Streamd, System::Nats];
        assert_eq!(order(0, &both), both);
        assert_eq!(order(1, &both), [System::Nats, System::Streamd]);
        assert_eq!(order(2, &both), both);
        assert_eq!(order(3, &[System::Nats]), [System::Nats]);
    }

    const BAR: Sustained = Sustained {
        p99_under: Duration::from_millis(100),
    };

    #[test]
    fn sustained_means_no_loss_p99_under_the_bar_and_complete() {
        assert!(BAR.by(&report(System::Nats, 1, 0, 99.9, 1.0)));
        assert!(!BAR.by(&report(System::Nats, 1, 1, 1.0, 1.0)));
        assert!(!BAR.by(&report(System::Nats, 1, 0, 100.0, 1.0)));
        let mut incomplete = report(System::Nats, 1, 0, 1.0, 1.0);
        incomplete.ok = false;
        assert!(!BAR.by(&incomplete));
        let lenient = Sustained {
            p99_under: Duration::from_secs(1),
        };
        assert!(lenient.by(&report(System::Nats, 1, 0, 100.0, 1.0)));
    }

    /// Runs a ladder where streamd fails from 300/s and nats from 200/s (in its second
    /// repetition only), and returns (system, rate, rep, order) per run and the summary.
    fn fake_ladder() -> (Vec<(System, u64, usize, usize)>, Summary) {
        let rates = [100, 200, 300, 400];
        let systems = [System::Streamd, System::Nats];
        let mut nats_runs_at_200 = 0;
        let records = futures::executor::block_on(climb(
            &rates,
            2,
            &systems,
            BAR,
            |system, rate| {
                let lost = match system {
                    System::Streamd => u64::from(rate >= 300),
                    System::Nats if rate == 200 => {
                        nats_runs_at_200 += 1;
                        u64::from(nats_runs_at_200 == 2)
                    }
                    System::Nats => u64::from(rate > 200),
                };
                let delivered = if system == System::Streamd { 2.0 } else { 1.0 } * rate as f64;
                std::future::ready(report(system, rate, lost, 1.0, delivered))
            },
            |_| Ok(()),
        ))
        .unwrap();
        let seen = records
            .iter()
            .map(|r| (r.report.system, r.report.rate, r.rep, r.order))
            .collect();
        (seen, Summary::of(&rates, &systems, &records, BAR))
    }

    #[test]
    fn each_system_climbs_until_a_rate_fails_in_some_run() {
        use System::{Nats as N, Streamd as S};
        let (runs, summary) = fake_ladder();
        assert_eq!(
            runs,
            [
                (S, 100, 0, 0),
                (N, 100, 0, 1),
                (N, 100, 1, 0),
                (S, 100, 1, 1),
                (S, 200, 0, 0),
                (N, 200, 0, 1),
                (N, 200, 1, 0),
                (S, 200, 1, 1),
                // nats failed 200/s once: it stops; streamd climbs on alone.
                (S, 300, 0, 0),
                (S, 300, 1, 0),
            ]
        );
        assert_eq!(summary.streamd.rate, Some(200));
        assert_eq!(summary.nats.as_ref().unwrap().rate, Some(100));
        assert_eq!(summary.ratio, Some(2.0));
        assert!(!summary.streamd.top_of_ladder);
        assert_eq!(summary.rates.len(), 4);
        assert_eq!(summary.rates[2].nats, None);
        assert_eq!(summary.rates[2].ratios, None);
        assert!(
            summary.table().contains("streamd 200/s, nats 100/s"),
            "{}",
            summary.table()
        );
    }

    #[test]
    fn ratios_pair_runs_by_repetition_and_skip_pairs_not_ok() {
        let (_, summary) = fake_ladder();
        let at_100 = summary.rates[0].ratios.clone().unwrap();
        assert_eq!(
            at_100.delivered_rate,
            Some(Spread {
                n: 2,
                median: 2.0,
                min: 2.0,
                max: 2.0
            })
        );
        assert_eq!(at_100.server_cpu_ns_per_delivered, None);
        // At 200/s nats's second run lost one: only the first pair counts.
        let at_200 = summary.rates[1].ratios.clone().unwrap();
        assert_eq!(at_200.p99.unwrap().n, 1);
    }

    #[test]
    fn spreads_take_the_middle_and_the_ends() {
        assert_eq!(Spread::of(vec![]), None);
        let odd = Spread::of(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((odd.median, odd.min, odd.max, odd.n), (2.0, 1.0, 3.0, 3));
        let even = Spread::of(vec![4.0, 1.0, 2.0, 10.0, f64::NAN]).unwrap();
        assert_eq!(
            (even.median, even.min, even.max, even.n),
            (3.0, 1.0, 10.0, 4)
        );
    }
}
