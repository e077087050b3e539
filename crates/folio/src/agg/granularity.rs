//! `$bucketAuto`'s `granularity`: rounding bucket boundaries to a preferred-number series.
//!
//! MongoDB's rounders, with their arithmetic: the Renard series (`R5` ... `R80`), `1-2-5` and the
//! E series (`E6` ... `E192`) scale a base series by powers of ten until the value falls inside
//! it, then take the next series number above (rounding up) or below (rounding down) the value;
//! `POWERSOF2` rounds to the next power of two above or below. A double (or an integer) is
//! rounded in doubles, scaled by a multiplier multiplied and divided by ten as MongoDB does, so
//! `5` rounds up to `6.300000000000001` in `R5` exactly as in MongoDB; a decimal128 is rounded in
//! decimal128. Zero rounds to itself. Powers of two are computed as `$pow` computes `2^n`: an
//! int32 or int64 when it fits, a double for negative exponents. Infinity rounds to itself.

use std::cmp::Ordering;

use bson::Bson;

use crate::doc::compare::{Number, cmp_bson};
use crate::error::Result;
use crate::expr::decimal;
use crate::expr::{loc, type_name};

/// A `granularity` and its rounder.
#[derive(Clone, Copy, Debug)]
pub struct Granularity {
    /// The base series of a preferred-number rounder (`None`: powers of two).
    series: Option<&'static [f64]>,
}

const R5: &[f64] = &[10.0, 16.0, 25.0, 40.0, 63.0];
const R10: &[f64] = &[100.0, 125.0, 160.0, 200.0, 250.0, 315.0, 400.0, 500.0, 630.0, 800.0];
const R20: &[f64] = &[
    100.0, 112.0, 125.0, 140.0, 160.0, 180.0, 200.0, 224.0, 250.0, 280.0, 315.0, 355.0, 400.0,
    450.0, 500.0, 560.0, 630.0, 710.0, 800.0, 900.0,
];
const R40: &[f64] = &[
    100.0, 106.0, 112.0, 118.0, 125.0, 132.0, 140.0, 150.0, 160.0, 170.0, 180.0, 190.0, 200.0,
    212.0, 224.0, 236.0, 250.0, 265.0, 280.0, 300.0, 315.0, 355.0, 375.0, 400.0, 425.0, 450.0,
    475.0, 500.0, 530.0, 560.0, 600.0, 630.0, 670.0, 710.0, 750.0, 800.0, 850.0, 900.0, 950.0,
];
const R80: &[f64] = &[
    103.0, 109.0, 115.0, 122.0, 128.0, 136.0, 145.0, 155.0, 165.0, 175.0, 185.0, 195.0, 206.0,
    218.0, 230.0, 243.0, 258.0, 272.0, 290.0, 307.0, 325.0, 345.0, 365.0, 387.0, 412.0, 437.0,
    462.0, 487.0, 515.0, 545.0, 575.0, 615.0, 650.0, 690.0, 730.0, 775.0, 825.0, 875.0, 925.0,
    975.0,
];
const SERIES_125: &[f64] = &[10.0, 20.0, 50.0];
const E6: &[f64] = &[10.0, 15.0, 22.0, 33.0, 47.0, 68.0];
const E12: &[f64] = &[10.0, 12.0, 15.0, 18.0, 22.0, 27.0, 33.0, 39.0, 47.0, 56.0, 68.0, 82.0];
const E24: &[f64] = &[
    10.0, 11.0, 12.0, 13.0, 15.0, 16.0, 18.0, 20.0, 22.0, 24.0, 27.0, 30.0, 33.0, 36.0, 39.0, 43.0,
    47.0, 51.0, 56.0, 62.0, 68.0, 75.0, 82.0, 91.0,
];
const E48: &[f64] = &[
    100.0, 105.0, 110.0, 115.0, 121.0, 127.0, 133.0, 140.0, 147.0, 154.0, 162.0, 169.0, 178.0,
    187.0, 196.0, 205.0, 215.0, 226.0, 237.0, 249.0, 261.0, 274.0, 287.0, 301.0, 316.0, 332.0,
    348.0, 365.0, 383.0, 402.0, 422.0, 442.0, 464.0, 487.0, 511.0, 536.0, 562.0, 590.0, 619.0,
    649.0, 681.0, 715.0, 750.0, 787.0, 825.0, 866.0, 909.0, 953.0,
];
const E96: &[f64] = &[
    100.0, 102.0, 105.0, 107.0, 110.0, 113.0, 115.0, 118.0, 121.0, 124.0, 127.0, 130.0, 133.0,
    137.0, 140.0, 143.0, 147.0, 150.0, 154.0, 158.0, 162.0, 165.0, 169.0, 174.0, 178.0, 182.0,
    187.0, 191.0, 196.0, 200.0, 205.0, 210.0, 215.0, 221.0, 226.0, 232.0, 237.0, 243.0, 249.0,
    255.0, 261.0, 267.0, 274.0, 280.0, 287.0, 294.0, 301.0, 309.0, 316.0, 324.0, 332.0, 340.0,
    348.0, 357.0, 365.0, 374.0, 383.0, 392.0, 402.0, 412.0, 422.0, 432.0, 442.0, 453.0, 464.0,
    475.0, 487.0, 499.0, 511.0, 523.0, 536.0, 549.0, 562.0, 576.0, 590.0, 604.0, 619.0, 634.0,
    649.0, 665.0, 681.0, 698.0, 715.0, 732.0, 750.0, 768.0, 787.0, 806.0, 825.0, 845.0, 866.0,
    887.0, 909.0, 931.0, 953.0, 976.0,
];
const E192: &[f64] = &[
    100.0, 101.0, 102.0, 104.0, 105.0, 106.0, 107.0, 109.0, 110.0, 111.0, 113.0, 114.0, 115.0,
    117.0, 118.0, 120.0, 121.0, 123.0, 124.0, 126.0, 127.0, 129.0, 130.0, 132.0, 133.0, 135.0,
    137.0, 138.0, 140.0, 142.0, 143.0, 145.0, 147.0, 149.0, 150.0, 152.0, 154.0, 156.0, 158.0,
    160.0, 162.0, 164.0, 165.0, 167.0, 169.0, 172.0, 174.0, 176.0, 178.0, 180.0, 182.0, 184.0,
    187.0, 189.0, 191.0, 193.0, 196.0, 198.0, 200.0, 203.0, 205.0, 208.0, 210.0, 213.0, 215.0,
    218.0, 221.0, 223.0, 226.0, 229.0, 232.0, 234.0, 237.0, 240.0, 243.0, 246.0, 249.0, 252.0,
    255.0, 258.0, 261.0, 264.0, 267.0, 271.0, 274.0, 277.0, 280.0, 284.0, 287.0, 291.0, 294.0,
    298.0, 301.0, 305.0, 309.0, 312.0, 316.0, 320.0, 324.0, 328.0, 332.0, 336.0, 340.0, 344.0,
    348.0, 352.0, 357.0, 361.0, 365.0, 370.0, 374.0, 379.0, 383.0, 388.0, 392.0, 397.0, 402.0,
    407.0, 412.0, 417.0, 422.0, 427.0, 432.0, 437.0, 442.0, 448.0, 453.0, 459.0, 464.0, 470.0,
    475.0, 481.0, 487.0, 493.0, 499.0, 505.0, 511.0, 517.0, 523.0, 530.0, 536.0, 542.0, 549.0,
    556.0, 562.0, 569.0, 576.0, 583.0, 590.0, 597.0, 604.0, 612.0, 619.0, 626.0, 634.0, 642.0,
    649.0, 657.0, 665.0, 673.0, 681.0, 690.0, 698.0, 706.0, 715.0, 723.0, 732.0, 741.0, 750.0,
    759.0, 768.0, 777.0, 787.0, 796.0, 806.0, 816.0, 825.0, 835.0, 845.0, 856.0, 866.0, 876.0,
    887.0, 898.0, 909.0, 920.0, 931.0, 942.0, 953.0, 965.0, 976.0, 988.0,
];

/// The granularities MongoDB registers, by name.
const ROUNDERS: &[(&str, Option<&[f64]>)] = &[
    ("R5", Some(R5)),
    ("R10", Some(R10)),
    ("R20", Some(R20)),
    ("R40", Some(R40)),
    ("R80", Some(R80)),
    ("1-2-5", Some(SERIES_125)),
    ("E6", Some(E6)),
    ("E12", Some(E12)),
    ("E24", Some(E24)),
    ("E48", Some(E48)),
    ("E96", Some(E96)),
    ("E192", Some(E192)),
    ("POWERSOF2", None),
];

impl Granularity {
    /// The rounder called `name` (40257 for a name MongoDB does not register).
    pub fn named(name: &str) -> Result<Granularity> {
        match ROUNDERS.iter().find(|(n, _)| *n == name) {
            Some((_, series)) => Ok(Granularity { series: *series }),
            None => Err(loc(40257, format!("Unknown rounding granularity '{name}'"))),
        }
    }

    /// The smallest series value strictly above `v` (zero stays zero).
    pub fn round_up(&self, v: &Bson) -> Result<Bson> {
        self.round(v, true)
    }

    /// The largest series value strictly below `v` (zero stays zero).
    pub fn round_down(&self, v: &Bson) -> Result<Bson> {
        self.round(v, false)
    }

    fn round(&self, v: &Bson, up: bool) -> Result<Bson> {
        let n = self.check(v)?;
        if n.to_f64() == 0.0 || n.to_f64().is_infinite() {
            return Ok(v.clone());
        }
        match (self.series, n) {
            (Some(series), Number::Decimal(..)) if up => Ok(decimal_round_up(series, n)),
            (Some(series), Number::Decimal(..)) => Ok(decimal_round_down(series, n)),
            (Some(series), n) if up => Ok(Bson::Double(double_round_up(series, n.to_f64()))),
            (Some(series), n) => Ok(Bson::Double(double_round_down(series, n.to_f64()))),
            (None, n) => Ok(power_of_two(n, up)),
        }
    }

    /// A non-negative number, with the rounder's own codes otherwise (the stage checks its
    /// values first, so these are reached only by direct use).
    fn check(&self, v: &Bson) -> Result<Number> {
        let codes =
            if self.series.is_some() { [40262, 40263, 40268] } else { [40265, 40266, 40267] };
        let Some(n) = Number::of(v) else {
            return Err(loc(
                codes[0],
                format!(
                    "A granularity rounder can only round numeric values, but found type: {}",
                    type_name(v)
                ),
            ));
        };
        let x = n.to_f64();
        if x.is_nan() {
            return Err(loc(codes[1], "A granularity rounder cannot round NaN"));
        }
        if x < 0.0 {
            return Err(loc(codes[2], "A granularity rounder can only round non-negative numbers"));
        }
        Ok(n)
    }
}

/// Scaling steps a rounding may take: a double's exponents span about 630 powers of ten, a
/// decimal128's about 12,300. MongoDB's loops have no bound; a subnormal double would scale its
/// multiplier to zero and never end there.
const DOUBLE_STEPS: usize = 700;
const DECIMAL_STEPS: usize = 13_000;

fn first(series: &[f64]) -> f64 {
    series.first().copied().unwrap_or(1.0)
}

fn last(series: &[f64]) -> f64 {
    series.last().copied().unwrap_or(1.0)
}

fn double_round_up(series: &[f64], number: f64) -> f64 {
    let mut steps = 0;
    let mut multiplier = 1.0;
    while steps < DOUBLE_STEPS && number >= last(series) * multiplier {
        steps += 1;
        multiplier *= 10.0;
    }
    while steps < DOUBLE_STEPS && number < first(series) * multiplier {
        steps += 1;
        let previous_min = first(series) * multiplier;
        multiplier /= 10.0;
        if number >= last(series) * multiplier {
            // Between the previous scale's minimum and this scale's maximum (0.8 in E6).
            return previous_min;
        }
    }
    // The first series number above `number` at this scale.
    let next = series.iter().find(|s| number < *s * multiplier).copied().unwrap_or(last(series));
    next * multiplier
}

fn double_round_down(series: &[f64], number: f64) -> f64 {
    let mut steps = 0;
    let mut multiplier = 1.0;
    while steps < DOUBLE_STEPS && number <= first(series) * multiplier {
        steps += 1;
        multiplier /= 10.0;
    }
    while steps < DOUBLE_STEPS && number > last(series) * multiplier {
        steps += 1;
        let previous_max = last(series) * multiplier;
        multiplier *= 10.0;
        if number <= first(series) * multiplier {
            return previous_max;
        }
    }
    // The series number before the first one at or above `number` at this scale.
    let at = series.iter().position(|s| s * multiplier >= number).unwrap_or(series.len());
    series[at.saturating_sub(1)] * multiplier
}

/// Decimal arithmetic on two numbers (both finite here; zero if they were not).
fn dec(op: fn(Number, Number) -> Option<Bson>, a: &Bson, b: &Bson) -> Bson {
    match (Number::of(a), Number::of(b)) {
        (Some(x), Some(y)) => op(x, y).unwrap_or(Bson::Int32(0)),
        _ => Bson::Int32(0),
    }
}

/// The base series as decimals, converted from doubles as MongoDB converts them.
fn decimal_series(series: &[f64]) -> Vec<Bson> {
    series
        .iter()
        .map(|s| decimal::from_number(Number::Double(*s)).unwrap_or(Bson::Double(*s)))
        .collect()
}

fn int_decimal(n: i32) -> Bson {
    decimal::from_number(Number::Int(n)).unwrap_or(Bson::Int32(n))
}

fn lt(a: &Bson, b: &Bson) -> bool {
    cmp_bson(a, b) == Ordering::Less
}

fn decimal_round_up(series: &[f64], n: Number) -> Bson {
    let number = n_bson(n);
    let series = decimal_series(series);
    let (Some(lo), Some(hi)) = (series.first(), series.last()) else { return number };
    let ten = int_decimal(10);
    let mut steps = 0;
    let mut multiplier = int_decimal(1);
    while steps < DECIMAL_STEPS && !lt(&number, &dec(decimal::multiply, hi, &multiplier)) {
        steps += 1;
        multiplier = dec(decimal::multiply, &multiplier, &ten);
    }
    while steps < DECIMAL_STEPS && lt(&number, &dec(decimal::multiply, lo, &multiplier)) {
        steps += 1;
        let previous_min = dec(decimal::multiply, lo, &multiplier);
        multiplier = dec(decimal::divide, &multiplier, &ten);
        if !lt(&number, &dec(decimal::multiply, hi, &multiplier)) {
            return previous_min;
        }
    }
    let next = series.iter().find(|s| lt(&number, &dec(decimal::multiply, s, &multiplier)));
    dec(decimal::multiply, next.unwrap_or(hi), &multiplier)
}

fn decimal_round_down(series: &[f64], n: Number) -> Bson {
    let number = n_bson(n);
    let series = decimal_series(series);
    let (Some(lo), Some(hi)) = (series.first(), series.last()) else { return number };
    let ten = int_decimal(10);
    let mut steps = 0;
    let mut multiplier = int_decimal(1);
    while steps < DECIMAL_STEPS && !lt(&dec(decimal::multiply, lo, &multiplier), &number) {
        steps += 1;
        multiplier = dec(decimal::divide, &multiplier, &ten);
    }
    while steps < DECIMAL_STEPS && lt(&dec(decimal::multiply, hi, &multiplier), &number) {
        steps += 1;
        let previous_max = dec(decimal::multiply, hi, &multiplier);
        multiplier = dec(decimal::multiply, &multiplier, &ten);
        if !lt(&dec(decimal::multiply, lo, &multiplier), &number) {
            return previous_max;
        }
    }
    let at = series
        .iter()
        .position(|s| !lt(&dec(decimal::multiply, s, &multiplier), &number))
        .unwrap_or(series.len());
    dec(decimal::multiply, &series[at.saturating_sub(1)], &multiplier)
}

fn n_bson(n: Number) -> Bson {
    match n {
        Number::Int(i) => Bson::Int32(i),
        Number::Long(l) => Bson::Int64(l),
        Number::Double(d) => Bson::Double(d),
        Number::Decimal(_, d) => Bson::Decimal128(d),
    }
}

/// The power of two above (`up`) or below a positive number, as MongoDB computes it.
fn power_of_two(n: Number, up: bool) -> Bson {
    let exp = match n {
        Number::Int(_) | Number::Long(_) => {
            let v = n.as_i64().unwrap_or(1).max(1);
            let lz = v.leading_zeros() as i64;
            let tz = v.trailing_zeros() as i64;
            match (up, lz + tz == 63) {
                (true, _) => 63 - lz + 1,
                (false, true) => 63 - lz - 1,
                (false, false) => 63 - lz,
            }
        }
        Number::Double(x) | Number::Decimal(x, _) => {
            let log = x.log2();
            (if up { log.floor() + 1.0 } else { log.ceil() - 1.0 }) as i64
        }
    };
    if let Number::Decimal(..) = n {
        // `2^exp` in decimal128, multiplied exactly (MongoDB raises through its decimal `$pow`,
        // whose result for an integral exponent is the same value).
        let two = int_decimal(2);
        let one = int_decimal(1);
        let mut out = one.clone();
        for _ in 0..exp.unsigned_abs().min(20_000) {
            out = dec(decimal::multiply, &out, &two);
        }
        return if exp < 0 { dec(decimal::divide, &one, &out) } else { out };
    }
    // `$pow` of two integers: an int32 or int64 when it fits, a double otherwise.
    match u32::try_from(exp) {
        Ok(e) if e < 31 => Bson::Int32(1 << e),
        Ok(e) if e < 63 => Bson::Int64(1 << e),
        _ => Bson::Double(2f64.powi(exp.clamp(-2000, 2000) as i32)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(g: &str, v: Bson) -> Bson {
        Granularity::named(g).and_then(|g| g.round_up(&v)).expect("rounds")
    }

    fn down(g: &str, v: Bson) -> Bson {
        Granularity::named(g).and_then(|g| g.round_down(&v)).expect("rounds")
    }

    #[test]
    fn preferred_numbers_in_doubles() {
        assert_eq!(up("R5", Bson::Int32(7)), Bson::Double(10.0));
        assert_eq!(up("R5", Bson::Int32(5)), Bson::Double(6.300000000000001));
        assert_eq!(up("R5", Bson::Double(10.0)), Bson::Double(16.0));
        assert_eq!(up("E6", Bson::Double(0.8)), Bson::Double(1.0));
        assert_eq!(up("1-2-5", Bson::Int32(120)), Bson::Double(200.0));
        assert_eq!(up("1-2-5", Bson::Int32(500)), Bson::Double(1000.0));
        assert_eq!(down("1-2-5", Bson::Int32(500)), Bson::Double(200.0));
        assert_eq!(down("E6", Bson::Double(0.8)), Bson::Double(0.68));
        assert_eq!(down("R10", Bson::Int32(100)), Bson::Double(80.0));
        assert_eq!(up("R80", Bson::Int32(1)), Bson::Double(1.03));
        assert_eq!(up("E192", Bson::Int32(0)), Bson::Int32(0));
        assert_eq!(down("E192", Bson::Double(0.0)), Bson::Double(0.0));
    }

    #[test]
    fn preferred_numbers_in_decimals() {
        let d = |s: &str| Bson::Decimal128(s.parse().expect("decimal"));
        assert_eq!(up("R5", d("7")), d("10.0000000000000"));
        assert_eq!(up("R5", d("0.5")), d("0.630000000000000"));
        assert_eq!(down("1-2-5", d("500")), d("200.0000000000000"));
        assert_eq!(up("E6", d("0.8")), d("1.00000000000000"));
    }

    #[test]
    fn powers_of_two() {
        assert_eq!(up("POWERSOF2", Bson::Int32(4)), Bson::Int32(8));
        assert_eq!(up("POWERSOF2", Bson::Int64(5)), Bson::Int32(8));
        assert_eq!(down("POWERSOF2", Bson::Int32(8)), Bson::Int32(4));
        assert_eq!(down("POWERSOF2", Bson::Int32(5)), Bson::Int32(4));
        assert_eq!(down("POWERSOF2", Bson::Int32(1)), Bson::Double(0.5));
        assert_eq!(up("POWERSOF2", Bson::Double(3.5)), Bson::Int32(4));
        assert_eq!(up("POWERSOF2", Bson::Double(0.3)), Bson::Double(0.5));
        assert_eq!(up("POWERSOF2", Bson::Int64(1 << 40)), Bson::Int64(1 << 41));
        assert_eq!(up("POWERSOF2", Bson::Int64(i64::MAX)), Bson::Double(2f64.powi(63)));
    }

    #[test]
    fn errors() {
        let e = Granularity::named("R7").unwrap_err();
        assert_eq!(
            (e.code_number(), e.message.as_str()),
            (40257, "Unknown rounding granularity 'R7'")
        );
        let r5 = Granularity::named("R5").expect("R5");
        assert_eq!(r5.round_up(&Bson::String("x".into())).unwrap_err().code_number(), 40262);
        assert_eq!(r5.round_up(&Bson::Double(f64::NAN)).unwrap_err().code_number(), 40263);
        assert_eq!(r5.round_down(&Bson::Int32(-1)).unwrap_err().code_number(), 40268);
        let p2 = Granularity::named("POWERSOF2").expect("POWERSOF2");
        assert_eq!(p2.round_up(&Bson::Null).unwrap_err().code_number(), 40265);
        assert_eq!(p2.round_up(&Bson::Double(f64::NAN)).unwrap_err().code_number(), 40266);
        assert_eq!(p2.round_down(&Bson::Int32(-1)).unwrap_err().code_number(), 40267);
    }
}
