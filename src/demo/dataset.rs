//! The demo's data set and the three steps its shards run: generate sensor readings, clean
//! and aggregate one part, merge the parts. Pure and deterministic (a part depends only on
//! its index), so a shard that runs twice writes the same bytes, and the demo can check the
//! cluster's answer against a computation of its own. No I/O here; `shard` writes the files.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Sensors the readings come from.
pub const SENSORS: u32 = 16;
/// Readings in one generated part.
pub const READINGS_PER_PART: u32 = 50_000;

/// splitmix64: a small, well-mixed generator; the same seed always gives the same part.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// One part of raw readings as CSV lines `sensor-NN,value`, value in thousandths of a degree.
/// About one line in fifty is dirty (unparsable or out of range), for the cleaning step.
pub fn generate_part(part: u32) -> String {
    let mut rng = SplitMix(0x5eed_0000_0000_0000 ^ u64::from(part));
    let mut out = String::with_capacity(READINGS_PER_PART as usize * 18);
    for _ in 0..READINGS_PER_PART {
        let r = rng.next();
        let sensor = (r % u64::from(SENSORS)) as u32;
        let value = ((r >> 8) % 80_000) as i64 - 20_000; // -20.000 .. 59.999 °C
        match (r >> 40) % 50 {
            0 => {
                let _ = writeln!(out, "sensor-{sensor:02},n/a");
            }
            1 => {
                let _ = writeln!(out, "sensor-{sensor:02},{}", 999_999 + value.abs());
            }
            _ => {
                let _ = writeln!(out, "sensor-{sensor:02},{value}");
            }
        }
    }
    out
}

/// Count, sum, minimum and maximum of one sensor's clean readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub count: u64,
    pub sum: i64,
    pub min: i64,
    pub max: i64,
}

impl Stats {
    fn one(value: i64) -> Stats {
        Stats {
            count: 1,
            sum: value,
            min: value,
            max: value,
        }
    }

    fn merge(&mut self, other: &Stats) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// Per-sensor statistics, plus how many dirty lines were dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aggregate {
    pub sensors: BTreeMap<String, Stats>,
    pub dropped: u64,
}

/// A reading is clean when it parses and lies in the sensors' physical range.
fn clean_reading(line: &str) -> Option<(&str, i64)> {
    let (sensor, value) = line.split_once(',')?;
    let value: i64 = value.trim().parse().ok()?;
    (-50_000..=100_000)
        .contains(&value)
        .then_some((sensor.trim(), value))
}

impl Aggregate {
    /// Clean and aggregate raw CSV readings.
    pub fn of_readings(csv: &str) -> Aggregate {
        let mut agg = Aggregate::default();
        for line in csv.lines().filter(|l| !l.trim().is_empty()) {
            match clean_reading(line) {
                Some((sensor, value)) => agg.add(sensor, &Stats::one(value)),
                None => agg.dropped += 1,
            }
        }
        agg
    }

    fn add(&mut self, sensor: &str, stats: &Stats) {
        match self.sensors.get_mut(sensor) {
            Some(s) => s.merge(stats),
            None => {
                self.sensors.insert(sensor.to_string(), *stats);
            }
        }
    }

    pub fn merge(&mut self, other: &Aggregate) {
        for (sensor, stats) in &other.sensors {
            self.add(sensor, stats);
        }
        self.dropped += other.dropped;
    }

    /// Tab-separated: a `dropped` line, then `sensor count sum min max` per sensor.
    pub fn to_tsv(&self) -> String {
        let mut out = format!("dropped\t{}\n", self.dropped);
        for (sensor, s) in &self.sensors {
            let _ = writeln!(
                out,
                "{sensor}\t{}\t{}\t{}\t{}",
                s.count, s.sum, s.min, s.max
            );
        }
        out
    }

    pub fn from_tsv(tsv: &str) -> Result<Aggregate, String> {
        let mut agg = Aggregate::default();
        for (n, line) in tsv.lines().enumerate() {
            let fields: Vec<&str> = line.split('\t').collect();
            let bad = || format!("line {}: '{line}' is not an aggregate row", n + 1);
            match fields.as_slice() {
                ["dropped", d] => agg.dropped = d.parse().map_err(|_| bad())?,
                [sensor, count, sum, min, max] => {
                    let stats = Stats {
                        count: count.parse().map_err(|_| bad())?,
                        sum: sum.parse().map_err(|_| bad())?,
                        min: min.parse().map_err(|_| bad())?,
                        max: max.parse().map_err(|_| bad())?,
                    };
                    agg.add(sensor, &stats);
                }
                _ => return Err(bad()),
            }
        }
        Ok(agg)
    }
}

/// The answer computed in one process, without the cluster: what the demo checks against.
pub fn expected(parts: u32) -> Aggregate {
    let mut total = Aggregate::default();
    for part in 0..parts {
        total.merge(&Aggregate::of_readings(&generate_part(part)));
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_deterministic_and_differ() {
        assert_eq!(generate_part(3), generate_part(3));
        assert_ne!(generate_part(3), generate_part(4));
        assert_eq!(generate_part(0).lines().count(), READINGS_PER_PART as usize);
    }

    #[test]
    fn cleaning_drops_dirty_lines_and_keeps_the_rest() {
        let agg = Aggregate::of_readings("a,1\na,n/a\nb,5\na,-3\nb,2000000\n\n");
        assert_eq!(agg.dropped, 2);
        assert_eq!(
            agg.sensors["a"],
            Stats {
                count: 2,
                sum: -2,
                min: -3,
                max: 1
            }
        );
        assert_eq!(agg.sensors["b"].count, 1);
    }

    #[test]
    fn merging_parts_equals_aggregating_everything_at_once() {
        let (a, b) = (generate_part(0), generate_part(1));
        let mut merged = Aggregate::of_readings(&a);
        merged.merge(&Aggregate::of_readings(&b));
        assert_eq!(merged, Aggregate::of_readings(&(a + &b)));
        assert!(merged.dropped > 0, "the generator makes some dirty lines");
        assert_eq!(merged.sensors.len(), SENSORS as usize);
    }

    #[test]
    fn tsv_round_trips_and_rejects_garbage() {
        let agg = Aggregate::of_readings(&generate_part(7));
        assert_eq!(Aggregate::from_tsv(&agg.to_tsv()), Ok(agg));
        assert!(Aggregate::from_tsv("sensor\tx\t1\t2\t3").is_err());
        assert!(Aggregate::from_tsv("just words").is_err());
    }
}
