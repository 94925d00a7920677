//! `streamer`: generated data. Each step publishes several series of random points,
//! x in [0, 3] and y in [0, 6], as the original dashboard's plot card did.

use async_trait::async_trait;
use rand::Rng;

use super::{
    Authority, Environment, Kind, ParamSpec, Params, StepContext, StepError, Worker, parse_count,
};
use crate::pb::{self, event::Payload};

pub const KIND: Kind = Kind {
    name: "streamer",
    description: "random point sets, drawn as a scatter plot",
    default_interval: std::time::Duration::from_secs(3),
    params: &[SERIES, MAX_POINTS],
    build,
};

const SERIES: ParamSpec = ParamSpec {
    name: "series",
    help: "series per event",
    default: Some("10"),
    authority: Authority::Client,
};

const MAX_POINTS: ParamSpec = ParamSpec {
    name: "max_points",
    help: "most points in one series; each has 1 to this many",
    default: Some("12"),
    authority: Authority::Client,
};

const X_MAX: f64 = 3.0;
const Y_MAX: f64 = 6.0;

struct Streamer {
    series: usize,
    max_points: usize,
}

fn build(params: &Params, _: &Environment) -> Result<Box<dyn Worker>, super::Build> {
    let count = |spec: &ParamSpec| {
        let value = spec.value(params).unwrap_or_default();
        parse_count(spec.name, value, 1..=1000)
    };
    Ok(Box::new(Streamer {
        series: count(&SERIES)?,
        max_points: count(&MAX_POINTS)?,
    }))
}

impl Streamer {
    fn points(&self) -> pb::Points {
        let mut rng = rand::rng();
        let series = (0..self.series)
            .map(|_| pb::Series {
                points: (0..rng.random_range(1..=self.max_points))
                    .map(|_| pb::Point {
                        x: rng.random_range(0.0..=X_MAX),
                        y: rng.random_range(0.0..=Y_MAX),
                    })
                    .collect(),
            })
            .collect();
        pb::Points { series }
    }
}

#[async_trait]
impl Worker for Streamer {
    async fn step(&mut self, ctx: &StepContext) -> Result<(), StepError> {
        ctx.publish(Payload::Points(self.points()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_stay_in_range_and_series_have_points() {
        let streamer = Streamer {
            series: 10,
            max_points: 12,
        };
        for _ in 0..100 {
            let points = streamer.points();
            assert_eq!(points.series.len(), 10);
            for series in &points.series {
                assert!((1..=12).contains(&series.points.len()));
                for p in &series.points {
                    assert!((0.0..=X_MAX).contains(&p.x) && (0.0..=Y_MAX).contains(&p.y));
                }
            }
        }
    }

    #[test]
    fn counts_are_checked() {
        let env = Environment::new("/tmp".into(), None).unwrap();
        let params = Params::from([("series".to_owned(), "0".to_owned())]);
        let Some(crate::services::Build::Param(err)) = build(&params, &env).err() else {
            panic!("series=0 accepted")
        };
        assert_eq!(err.key, "series");
    }
}
