//! Date expressions: date parts, `$dateToString`, `$dateFromString`, `$dateAdd`,
//! `$dateSubtract`, `$dateDiff` and `$dateTrunc`.
//!
//! BSON dates are milliseconds since the Unix epoch in UTC. Calendar fields come from the
//! proleptic Gregorian calendar (Howard Hinnant's `civil_from_days` algorithm) applied to the
//! *local* time, which [`Tz`] computes: an operator converts the UTC instant to wall-clock
//! milliseconds in its time zone (the offset looked up at that instant, so daylight saving time
//! is resolved per date), works on calendar fields, and converts a computed wall-clock time back
//! with [`Tz::utc_of_local`].
//!
//! Which operations are calendar operations follows MongoDB: `$dateAdd` with units of a day or
//! more keeps the wall-clock time across a DST change (adding a day to 12:00 gives 12:00), with
//! hours or less it adds elapsed time; `$dateDiff` counts unit boundaries crossed in local time,
//! corrected by the change of offset for hours, minutes and seconds; `$dateTrunc` bins hours and
//! smaller units from the local midnight of 2000-01-01 in elapsed time, and days and larger
//! units on the local calendar.

use bson::Bson;

use super::ops::{Args, NamedOperator, as_int, get, given, named};
use super::tz::{Tz, parse_offset, timezone_arg as timezone};
use super::{Value, loc, type_name};
use crate::error::Result;

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 to (year, month 1-12, day 1-31).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// The calendar fields of a moment in local time.
#[derive(Clone, Copy, Debug)]
struct Parts {
    year: i64,
    month: u32,
    day: u32,
    hour: i64,
    minute: i64,
    second: i64,
    milli: i64,
    /// Days since the epoch (local).
    days: i64,
}

/// The calendar fields of a local time (milliseconds since the local epoch).
fn parts(local: i64) -> Parts {
    let days = local.div_euclid(MS_PER_DAY);
    let rem = local.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    Parts {
        year,
        month,
        day,
        hour: rem / 3_600_000,
        minute: rem / 60_000 % 60,
        second: rem / 1000 % 60,
        milli: rem % 1000,
        days,
    }
}

/// 1 (Sunday) to 7 (Saturday).
fn day_of_week(days: i64) -> i64 {
    (days + 4).rem_euclid(7) + 1
}

fn day_of_year(p: &Parts) -> i64 {
    p.days - days_from_civil(p.year, 1, 1) + 1
}

/// `$week`: weeks start on Sunday; days before the year's first Sunday are week 0.
fn week(p: &Parts) -> i64 {
    let doy = day_of_year(p) - 1;
    let jan1_dow = day_of_week(days_from_civil(p.year, 1, 1)) - 1;
    (doy + jan1_dow) / 7
}

/// ISO 8601 (year, week, weekday 1=Monday).
fn iso_week(p: &Parts) -> (i64, i64, i64) {
    let wd = (p.days + 3).rem_euclid(7) + 1;
    // The Thursday of this week decides the ISO year.
    let thursday = p.days - wd + 4;
    let (y, _, _) = civil_from_days(thursday);
    let week = (thursday - days_from_civil(y, 1, 1)) / 7 + 1;
    (y, week, wd)
}

/// A date argument: milliseconds, `Ok(None)` for null/missing.
fn date_arg(v: &Value) -> Result<Option<i64>> {
    match v {
        None | Some(Bson::Null) | Some(Bson::Undefined) => Ok(None),
        Some(Bson::DateTime(d)) => Ok(Some(d.timestamp_millis())),
        Some(Bson::Timestamp(t)) => Ok(Some(i64::from(t.time) * 1000)),
        Some(Bson::ObjectId(o)) => Ok(Some(o.timestamp().timestamp_millis())),
        Some(other) => {
            Err(loc(16006, format!("can't convert from BSON type {} to Date", type_name(other))))
        }
    }
}

/// Formats a UTC instant with MongoDB's `%` format specifiers in UTC.
pub fn format_utc(ms: i64, fmt: &str) -> String {
    format(ms, fmt, Tz::Utc)
}

/// Formats a UTC instant (milliseconds) with MongoDB's `%` format specifiers in a time zone.
/// `%z` is the offset at that instant as `+hhmm`, `%Z` the same offset in minutes (`-300`).
pub fn format(ms: i64, fmt: &str, tz: Tz) -> String {
    let p = parts(tz.to_local(ms));
    let offset_min = tz.offset_secs(ms) / 60;
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(spec) = chars.next() else { break };
        let s = match spec {
            'Y' => format!("{:04}", p.year),
            'm' => format!("{:02}", p.month),
            'd' => format!("{:02}", p.day),
            'H' => format!("{:02}", p.hour),
            'M' => format!("{:02}", p.minute),
            'S' => format!("{:02}", p.second),
            'L' => format!("{:03}", p.milli),
            'j' => format!("{:03}", day_of_year(&p)),
            'w' => day_of_week(p.days).to_string(),
            'u' => iso_week(&p).2.to_string(),
            'U' => format!("{:02}", week(&p)),
            'V' => format!("{:02}", iso_week(&p).1),
            'G' => format!("{:04}", iso_week(&p).0),
            'z' => {
                let sign = if offset_min < 0 { '-' } else { '+' };
                format!("{sign}{:02}{:02}", offset_min.abs() / 60, offset_min.abs() % 60)
            }
            'Z' => offset_min.to_string(),
            'b' => MONTHS[(p.month - 1) as usize][..3].to_string(),
            'B' => MONTHS[(p.month - 1) as usize].to_string(),
            '%' => "%".to_string(),
            other => format!("%{other}"),
        };
        out.push_str(&s);
    }
    out
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Parses a date string (ISO 8601 forms, or `format` when given) to a UTC instant; a string
/// without an offset is read as UTC. `None` when malformed.
pub fn parse(s: &str, format: Option<&str>) -> Option<i64> {
    let (local, offset) = parse_local(s, format)?;
    Some(local - offset.unwrap_or(0) * 1000)
}

/// Parses a date string to its wall-clock time (milliseconds since the local epoch) and the
/// UTC offset in seconds that the string itself carries (`Z`, `+01:00`, or `%z`/`%Z` with a
/// format), if any.
fn parse_local(s: &str, format: Option<&str>) -> Option<(i64, Option<i64>)> {
    match format {
        Some(f) => parse_with_format(s, f),
        None => parse_iso(s),
    }
}

fn parse_iso(s: &str) -> Option<(i64, Option<i64>)> {
    let s = s.trim();
    let (date, rest) = match s.find(['T', ' ']) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    };
    let mut dp = date.split('-');
    let y: i64 = dp.next()?.parse().ok()?;
    let m: u32 = dp.next().map_or(Some(1), |x| x.parse().ok())?;
    let d: u32 = dp.next().map_or(Some(1), |x| x.parse().ok())?;
    if dp.next().is_some() || !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    let (time, offset) = split_offset(rest)?;
    let mut tp = time.split(':');
    let h: i64 = tp.next().filter(|x| !x.is_empty()).map_or(Some(0), |x| x.parse().ok())?;
    let mi: i64 = tp.next().map_or(Some(0), |x| x.parse().ok())?;
    let sec_str = tp.next().unwrap_or("0");
    let (sec, ms) = match sec_str.split_once('.') {
        Some((a, b)) => {
            let frac: String = b.chars().chain("000".chars()).take(3).collect();
            (a.parse::<i64>().ok()?, frac.parse::<i64>().ok()?)
        }
        None => (sec_str.parse::<i64>().ok()?, 0),
    };
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    Some((days * MS_PER_DAY + h * 3_600_000 + mi * 60_000 + sec * 1000 + ms, offset))
}

/// Splits a trailing `Z` or `±hh[[:]mm]` from a time.
fn split_offset(t: &str) -> Option<(&str, Option<i64>)> {
    if let Some(x) = t.strip_suffix('Z') {
        return Some((x, Some(0)));
    }
    match t.rfind(['+', '-']) {
        Some(i) => Some((&t[..i], Some(parse_offset(&t[i..])?))),
        None => Some((t, None)),
    }
}

fn parse_with_format(s: &str, f: &str) -> Option<(i64, Option<i64>)> {
    let (mut y, mut m, mut d, mut h, mut mi, mut sec, mut ms) =
        (1970i64, 1u32, 1u32, 0i64, 0i64, 0i64, 0i64);
    let mut off = None;
    let mut input = s;
    let mut spec = f.chars();
    let take = |input: &mut &str, n: usize| -> Option<i64> {
        let len = input.chars().take(n).take_while(|c| c.is_ascii_digit() || *c == '-').count();
        if len == 0 {
            return None;
        }
        let (a, b) = input.split_at(len);
        *input = b;
        a.parse().ok()
    };
    while let Some(c) = spec.next() {
        if c != '%' {
            input = input.strip_prefix(c)?;
            continue;
        }
        match spec.next()? {
            'Y' => y = take(&mut input, 4)?,
            'm' => m = u32::try_from(take(&mut input, 2)?).ok()?,
            'd' => d = u32::try_from(take(&mut input, 2)?).ok()?,
            'H' => h = take(&mut input, 2)?,
            'M' => mi = take(&mut input, 2)?,
            'S' => sec = take(&mut input, 2)?,
            'L' => ms = take(&mut input, 3)?,
            'z' => {
                let len = if input.as_bytes().get(3) == Some(&b':') { 6 } else { 5 };
                let cut = input.char_indices().nth(len).map_or(input.len(), |(i, _)| i);
                let (tz, rest) = input.split_at(cut);
                off = Some(parse_offset(tz)?);
                input = rest;
            }
            'Z' => {
                // Minutes east of UTC, with a sign: `+60`, `-300`.
                let sign = match input.as_bytes().first()? {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                input = &input[1..];
                let len = input.bytes().take_while(u8::is_ascii_digit).count();
                if len == 0 {
                    return None;
                }
                let (digits, rest) = input.split_at(len);
                off = Some(sign * digits.parse::<i64>().ok()? * 60);
                input = rest;
            }
            '%' => input = input.strip_prefix('%')?,
            _ => return None,
        }
    }
    if !input.is_empty() || !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    let local =
        days_from_civil(y, m, d) * MS_PER_DAY + h * 3_600_000 + mi * 60_000 + sec * 1000 + ms;
    Some((local, off))
}

/// The date operators with named arguments, with their argument names and the location codes
/// of a malformed argument object.
pub(super) const NAMED: &[NamedOperator] = &[
    named(
        "$dateToString",
        &["date"],
        &["format", "timezone", "onNull"],
        [18629, 18534, 18627],
        date_to_string,
    ),
    named(
        "$dateFromString",
        &["dateString"],
        &["format", "timezone", "onError", "onNull"],
        [40540, 40541, 40542],
        date_from_string,
    ),
    named("$dateAdd", &["startDate", "unit", "amount"], &["timezone"], ADD_CODES, |a| {
        date_add("$dateAdd", a, false)
    }),
    named("$dateSubtract", &["startDate", "unit", "amount"], &["timezone"], ADD_CODES, |a| {
        date_add("$dateSubtract", a, true)
    }),
    named(
        "$dateDiff",
        &["startDate", "endDate", "unit"],
        &["timezone", "startOfWeek"],
        [5166300, 5166301, 5166302],
        date_diff,
    ),
    named(
        "$dateTrunc",
        &["date", "unit"],
        &["binSize", "timezone", "startOfWeek"],
        [5439007, 5439008, 5439009],
        date_trunc,
    ),
    named(
        "$dateToParts",
        &["date"],
        &["timezone", "iso8601"],
        [40524, 40520, 40522],
        date_to_parts,
    ),
    named(
        "$dateFromParts",
        &[],
        &[
            "year",
            "month",
            "day",
            "hour",
            "minute",
            "second",
            "millisecond",
            "isoWeekYear",
            "isoWeek",
            "isoDayOfWeek",
            "timezone",
        ],
        [40519, 40518, 40516],
        date_from_parts,
    ),
];

const ADD_CODES: [i32; 3] = [5166400, 5166401, 5166402];

/// The date-part operators, which take a date or `{date, timezone}` (the parser checks the
/// argument's shape, code 40535 for an unknown option).
pub(super) const DATE_PARTS: &[NamedOperator] = &[
    date_part("$year", |a| part(a, |p| p.year)),
    date_part("$month", |a| part(a, |p| i64::from(p.month))),
    date_part("$dayOfMonth", |a| part(a, |p| i64::from(p.day))),
    date_part("$hour", |a| part(a, |p| p.hour)),
    date_part("$minute", |a| part(a, |p| p.minute)),
    date_part("$second", |a| part(a, |p| p.second)),
    date_part("$millisecond", |a| part(a, |p| p.milli)),
    date_part("$dayOfWeek", |a| part(a, |p| day_of_week(p.days))),
    date_part("$dayOfYear", |a| part(a, day_of_year)),
    date_part("$week", |a| part(a, week)),
    date_part("$isoWeek", |a| part(a, |p| iso_week(p).1)),
    // The one date part that is a long.
    date_part("$isoWeekYear", |a| {
        Ok(Some(local_parts(a)?.map_or(Bson::Null, |p| Bson::Int64(iso_week(&p).0))))
    }),
    date_part("$isoDayOfWeek", |a| part(a, |p| iso_week(p).2)),
];

/// The table entry of a date-part operator.
const fn date_part(name: &'static str, eval: fn(&Args) -> Result<Value>) -> NamedOperator {
    named(name, &["date"], &["timezone"], [40535; 3], eval)
}

/// A date part as an int: `f` reads it from the calendar fields.
fn part(args: &Args, f: fn(&Parts) -> i64) -> Result<Value> {
    Ok(Some(local_parts(args)?.map_or(Bson::Null, |p| Bson::Int32(f(&p) as i32))))
}

/// The calendar fields of a date part's `date` in its `timezone`; `None` (null) when either
/// is null or missing.
fn local_parts(args: &Args) -> Result<Option<Parts>> {
    let Some(ms) = date_arg(&get(args, "date"))? else { return Ok(None) };
    let Some(tz) = timezone(&get(args, "timezone"))? else { return Ok(None) };
    Ok(Some(parts(tz.to_local(ms))))
}

fn date_to_string(args: &Args) -> Result<Value> {
    let date = get(args, "date");
    if matches!(date, None | Some(Bson::Null) | Some(Bson::Undefined)) {
        return Ok(if given(args, "onNull").is_some() {
            get(args, "onNull")
        } else {
            Some(Bson::Null)
        });
    }
    let ms = date_arg(&date)?.unwrap_or(0);
    let Some(tz) = timezone(&get(args, "timezone"))? else { return Ok(Some(Bson::Null)) };
    let fmt = match get(args, "format") {
        Some(Bson::String(f)) => f,
        None => {
            if tz.is_utc() {
                "%Y-%m-%dT%H:%M:%S.%LZ".to_string()
            } else {
                "%Y-%m-%dT%H:%M:%S.%L".to_string()
            }
        }
        Some(Bson::Null) => return Ok(Some(Bson::Null)),
        Some(other) => {
            return Err(loc(
                18533,
                format!(
                    "$dateToString requires that 'format' be a string, found: {} with value {}",
                    type_name(&other),
                    crate::doc::fmt::value_string(&other)
                ),
            ));
        }
    };
    validate_format(&fmt)?;
    Ok(Some(Bson::String(format(ms, &fmt, tz))))
}

fn validate_format(fmt: &str) -> Result<()> {
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                None => return Err(loc(18535, "Unmatched '%' at end of format string")),
                Some(
                    'Y' | 'm' | 'd' | 'H' | 'M' | 'S' | 'L' | 'j' | 'w' | 'u' | 'U' | 'V' | 'G'
                    | 'z' | 'Z' | 'b' | 'B' | '%',
                ) => {}
                Some(other) => {
                    return Err(loc(
                        18536,
                        format!("Invalid format character '%{other}' in format string"),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn date_from_string(args: &Args) -> Result<Value> {
    let s = match get(args, "dateString") {
        None | Some(Bson::Null) | Some(Bson::Undefined) => {
            return Ok(if given(args, "onNull").is_some() {
                get(args, "onNull")
            } else {
                Some(Bson::Null)
            });
        }
        Some(Bson::String(s)) => s,
        Some(other) => {
            if given(args, "onError").is_some() {
                return Ok(get(args, "onError"));
            }
            return Err(conversion_failure(format!(
                "$dateFromString requires that 'dateString' be a string, found: {} with value {}",
                type_name(&other),
                crate::doc::fmt::value_string(&other)
            )));
        }
    };
    let format = match get(args, "format") {
        Some(Bson::String(f)) => Some(f),
        None => None,
        Some(Bson::Null) => return Ok(Some(Bson::Null)),
        Some(other) => {
            return Err(loc(
                40684,
                format!(
                    "$dateFromString requires that 'format' be a string, found: {} with value {}",
                    type_name(&other),
                    crate::doc::fmt::value_string(&other)
                ),
            ));
        }
    };
    let Some(tz) = timezone(&get(args, "timezone"))? else { return Ok(Some(Bson::Null)) };
    let parsed = match parse_local(&s, format.as_deref()) {
        Some((local, None)) => Ok(tz.utc_of_local(local)),
        Some((local, Some(off))) if tz.is_utc() => Ok(local - off * 1000),
        Some(_) => Err(conversion_failure(
            "you cannot pass in a date/time string with GMT offset together with a timezone argument"
                .to_string(),
        )),
        None => Err(conversion_failure(format!("Error parsing date string '{s}'"))),
    };
    match parsed {
        Ok(ms) => Ok(Some(Bson::DateTime(bson::DateTime::from_millis(ms)))),
        Err(_) if given(args, "onError").is_some() => Ok(get(args, "onError")),
        Err(e) => Err(e),
    }
}

/// ConversionFailure (241), which the error enum does not name.
fn conversion_failure(msg: String) -> crate::error::Error {
    loc(241, msg)
}

/// A time unit of `$dateAdd`, `$dateDiff` and `$dateTrunc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    Year,
    Quarter,
    Month,
    Week,
    Day,
    Hour,
    Minute,
    Second,
    Millisecond,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Year => "year",
            Unit::Quarter => "quarter",
            Unit::Month => "month",
            Unit::Week => "week",
            Unit::Day => "day",
            Unit::Hour => "hour",
            Unit::Minute => "minute",
            Unit::Second => "second",
            Unit::Millisecond => "millisecond",
        }
    }

    /// The length of a unit of a fixed length (hours and smaller), in milliseconds.
    fn fixed_ms(self) -> Option<i64> {
        match self {
            Unit::Hour => Some(3_600_000),
            Unit::Minute => Some(60_000),
            Unit::Second => Some(1000),
            Unit::Millisecond => Some(1),
            Unit::Year | Unit::Quarter | Unit::Month | Unit::Week | Unit::Day => None,
        }
    }
}

fn unit_arg(op: &str, v: &Value) -> Result<Option<Unit>> {
    match v {
        None | Some(Bson::Null) | Some(Bson::Undefined) => Ok(None),
        Some(Bson::String(u)) => Ok(Some(match u.as_str() {
            "year" => Unit::Year,
            "quarter" => Unit::Quarter,
            "month" => Unit::Month,
            "week" => Unit::Week,
            "day" => Unit::Day,
            "hour" => Unit::Hour,
            "minute" => Unit::Minute,
            "second" => Unit::Second,
            "millisecond" => Unit::Millisecond,
            other => return Err(loc(9, format!("{op}: unknown time unit value: {other}"))),
        })),
        Some(other) => Err(loc(
            5439013,
            format!("{op} requires 'unit' to be a string, but got {}", type_name(other)),
        )),
    }
}

/// `startOfWeek` as a day number 1 (Sunday) to 7 (Saturday); Sunday when absent, `Ok(None)`
/// when null.
fn start_of_week(op: &str, args: &Args) -> Result<Option<i64>> {
    match get(args, "startOfWeek") {
        None => Ok(Some(1)),
        Some(Bson::String(s)) => Ok(Some(match s.to_ascii_lowercase().as_str() {
            "sunday" | "sun" => 1,
            "monday" | "mon" => 2,
            "tuesday" | "tue" => 3,
            "wednesday" | "wed" => 4,
            "thursday" | "thu" => 5,
            "friday" | "fri" => 6,
            "saturday" | "sat" => 7,
            other => {
                return Err(loc(
                    5439016,
                    format!(
                        "{op} parameter 'startOfWeek' value cannot be recognized as a day of a week: {other}"
                    ),
                ));
            }
        })),
        Some(Bson::Null) | Some(Bson::Undefined) => Ok(None),
        Some(other) => Err(loc(
            5439015,
            format!("{op} requires 'startOfWeek' to be a string, but got {}", type_name(&other)),
        )),
    }
}

/// A local time plus a number of months (the day clamped to the month's length); `None` on
/// overflow.
fn add_months(local: i64, months: i64) -> Option<i64> {
    let p = parts(local);
    let total = (p.year * 12 + i64::from(p.month) - 1).checked_add(months)?;
    let (y, m) = (total.div_euclid(12), (total.rem_euclid(12) + 1) as u32);
    if y.abs() > 300_000_000 {
        return None;
    }
    let d = p.day.min(days_in_month(y, m));
    let tod = local.rem_euclid(MS_PER_DAY);
    days_from_civil(y, m, d).checked_mul(MS_PER_DAY)?.checked_add(tod)
}

/// Adds `amount` units to a UTC instant in a time zone, as MongoDB's `$dateAdd`: calendar units
/// (and every unit in UTC or at a fixed offset) are added to the wall-clock time, hours and
/// smaller units in a named zone to the elapsed time. `None` on overflow.
fn add_in_zone(start: i64, unit: Unit, amount: i64, tz: Tz) -> Option<i64> {
    if let Some(unit_ms) = unit.fixed_ms()
        && (unit == Unit::Millisecond || matches!(tz, Tz::Named(_)))
    {
        return amount.checked_mul(unit_ms).and_then(|d| start.checked_add(d));
    }
    let local = tz.to_local(start);
    let fixed = |unit_ms: i64| amount.checked_mul(unit_ms).and_then(|d| local.checked_add(d));
    let new_local = match unit {
        Unit::Year => amount.checked_mul(12).and_then(|m| add_months(local, m)),
        Unit::Quarter => amount.checked_mul(3).and_then(|m| add_months(local, m)),
        Unit::Month => add_months(local, amount),
        Unit::Week => fixed(7 * MS_PER_DAY),
        Unit::Day => fixed(MS_PER_DAY),
        Unit::Hour | Unit::Minute | Unit::Second | Unit::Millisecond => {
            fixed(unit.fixed_ms().unwrap_or(1))
        }
    }?;
    Some(tz.utc_of_local(new_local))
}

/// Adds `amount` units (`"day"`, `"month"`, ...) to a UTC instant in UTC, as `$dateAdd` does;
/// `None` for an unknown unit or on overflow.
pub(crate) fn add_units(ms: i64, unit: &str, amount: i64) -> Option<i64> {
    let unit = unit_arg("", &Some(Bson::String(unit.to_string()))).ok()??;
    add_in_zone(ms, unit, amount, Tz::Utc)
}

/// Whether a `$dateAdd` amount roughly fits the range of a date (MongoDB's bound, which keeps
/// the calendar arithmetic from overflowing).
fn amount_in_range(amount: i64, unit: Unit) -> bool {
    const MAX_DAYS: i64 = (u64::MAX / 86_400_000) as i64 + 1;
    const MAX_YEARS: i64 = MAX_DAYS / 365 + 1;
    let max = match unit {
        Unit::Year => MAX_YEARS,
        Unit::Quarter => MAX_YEARS * 4,
        Unit::Month => MAX_YEARS * 12,
        Unit::Week => MAX_DAYS / 7,
        Unit::Day => MAX_DAYS,
        Unit::Hour => MAX_DAYS * 24,
        Unit::Minute => MAX_DAYS * 24 * 60,
        Unit::Second => MAX_DAYS * 24 * 60 * 60,
        Unit::Millisecond => return true,
    };
    -max < amount && amount < max
}

/// `$dateAdd` (`subtract` false) or `$dateSubtract`.
fn date_add(name: &str, args: &Args, subtract: bool) -> Result<Value> {
    let Some(start) = date_arg(&get(args, "startDate"))? else { return Ok(Some(Bson::Null)) };
    let Some(unit) = unit_arg(name, &get(args, "unit"))? else { return Ok(Some(Bson::Null)) };
    let amount = match get(args, "amount") {
        None | Some(Bson::Null) | Some(Bson::Undefined) => return Ok(Some(Bson::Null)),
        Some(v) => match as_int(&v) {
            Some(n) => n,
            None => {
                return Err(loc(
                    5166403,
                    format!(
                        "{name} expects integer amount of time units, but got: {}",
                        crate::doc::fmt::value_string(&v)
                    ),
                ));
            }
        },
    };
    let Some(tz) = timezone(&get(args, "timezone"))? else { return Ok(Some(Bson::Null)) };
    let amount = if subtract {
        amount.checked_neg().ok_or_else(|| {
            loc(
                6045000,
                format!("invalid {name} 'amount' parameter value: {amount} {}", unit.name()),
            )
        })?
    } else {
        amount
    };
    if !amount_in_range(amount, unit) {
        return Err(loc(
            5976500,
            format!("invalid dateAdd 'amount' parameter value: {amount} {}", unit.name()),
        ));
    }
    match add_in_zone(start, unit, amount, tz) {
        Some(ms) => Ok(Some(Bson::DateTime(bson::DateTime::from_millis(ms)))),
        None => Err(loc(5166406, format!("{name} overflowed"))),
    }
}

fn date_diff(args: &Args) -> Result<Value> {
    let Some(a) = date_arg(&get(args, "startDate"))? else {
        return Ok(Some(Bson::Null));
    };
    let Some(b) = date_arg(&get(args, "endDate"))? else {
        return Ok(Some(Bson::Null));
    };
    let Some(unit) = unit_arg("$dateDiff", &get(args, "unit"))? else {
        return Ok(Some(Bson::Null));
    };
    let Some(tz) = timezone(&get(args, "timezone"))? else { return Ok(Some(Bson::Null)) };
    let week_start = if unit == Unit::Week {
        match start_of_week("$dateDiff", args)? {
            Some(s) => s,
            None => return Ok(Some(Bson::Null)),
        }
    } else {
        1
    };
    let (la, lb) = (tz.to_local(a), tz.to_local(b));
    let (pa, pb) = (parts(la), parts(lb));
    // The change of offset between the two instants, in seconds: hours, minutes and seconds
    // count boundaries on the local clock, corrected by it (as MongoDB does).
    let shift = tz.offset_secs(a) - tz.offset_secs(b);
    let months = |p: &Parts| p.year * 12 + i64::from(p.month) - 1;
    let boundaries = |unit_ms: i64| lb.div_euclid(unit_ms) - la.div_euclid(unit_ms);
    let n = match unit {
        Unit::Year => pb.year - pa.year,
        Unit::Quarter => months(&pb).div_euclid(3) - months(&pa).div_euclid(3),
        Unit::Month => months(&pb) - months(&pa),
        Unit::Week => {
            // Days since the start of the week each date is in.
            let into_week = |days: i64| (day_of_week(days) - week_start).rem_euclid(7);
            ((pb.days - into_week(pb.days)) - (pa.days - into_week(pa.days))) / 7
        }
        Unit::Day => pb.days - pa.days,
        Unit::Hour => boundaries(3_600_000) + shift / 3600,
        Unit::Minute => boundaries(60_000) + shift / 60,
        Unit::Second => boundaries(1000) + shift,
        Unit::Millisecond => b.saturating_sub(a),
    };
    Ok(Some(Bson::Int64(n)))
}

/// 2000-01-01T00:00:00Z, the reference point of `$dateTrunc`'s bins.
const REFERENCE_MS: i64 = 946_684_800_000;

/// `$dateTrunc`: the start of the `binSize`-unit bin holding the date. Bins are counted from
/// 2000-01-01 at local midnight (weeks from the first `startOfWeek` day on or after it): hours
/// and smaller units in elapsed time, days and larger on the local calendar, as in MongoDB.
fn date_trunc(args: &Args) -> Result<Value> {
    let Some(ms) = date_arg(&get(args, "date"))? else { return Ok(Some(Bson::Null)) };
    let Some(unit) = unit_arg("$dateTrunc", &get(args, "unit"))? else {
        return Ok(Some(Bson::Null));
    };
    let Some(tz) = timezone(&get(args, "timezone"))? else { return Ok(Some(Bson::Null)) };
    let bin = match get(args, "binSize") {
        None => 1,
        Some(Bson::Null) | Some(Bson::Undefined) => return Ok(Some(Bson::Null)),
        Some(v) => match as_int(&v) {
            Some(n) if n > 0 => n,
            _ => {
                return Err(loc(
                    5439017,
                    format!(
                        "$dateTrunc requires 'binSize' to be a 64-bit integer greater than zero, but got value '{}' of type {}",
                        crate::doc::fmt::value_string(&v),
                        type_name(&v)
                    ),
                ));
            }
        },
    };
    let week_start = if unit == Unit::Week {
        match start_of_week("$dateTrunc", args)? {
            Some(s) => s,
            None => return Ok(Some(Bson::Null)),
        }
    } else {
        1
    };
    let overflow = || loc(5439018, "$dateTrunc overflowed");
    // Local midnight of 2000-01-01 (no zone changed its offset in early January 2000).
    let reference = REFERENCE_MS - tz.offset_secs(REFERENCE_MS) * 1000;
    if let Some(unit_ms) = unit.fixed_ms() {
        let span = bin.checked_mul(unit_ms).ok_or_else(overflow)?;
        let r = i128::from(reference);
        let bins = (i128::from(ms) - r).div_euclid(i128::from(span));
        let truncated = i64::try_from(r + bins * i128::from(span)).map_err(|_| overflow())?;
        return Ok(Some(Bson::DateTime(bson::DateTime::from_millis(truncated))));
    }
    if bin > 100_000_000_000 {
        return Err(loc(5439006, "dateTrunc unsupported binSize value"));
    }
    let p = parts(tz.to_local(ms));
    let ref_days = days_from_civil(2000, 1, 1);
    let lower = |distance: i64| distance - distance.rem_euclid(bin);
    let local = match unit {
        Unit::Day => (ref_days + lower(p.days - ref_days)) * MS_PER_DAY,
        Unit::Week => {
            let week_ref = ref_days + (week_start - day_of_week(ref_days)).rem_euclid(7);
            (week_ref + lower((p.days - week_ref).div_euclid(7)) * 7) * MS_PER_DAY
        }
        Unit::Year | Unit::Quarter | Unit::Month => {
            let per = match unit {
                Unit::Year => 12,
                Unit::Quarter => 3,
                _ => 1,
            };
            let months = (p.year - 2000) * 12 + i64::from(p.month) - 1;
            let m0 = lower(months.div_euclid(per)) * per;
            days_from_civil(2000 + m0.div_euclid(12), (m0.rem_euclid(12) + 1) as u32, 1)
                .checked_mul(MS_PER_DAY)
                .ok_or_else(overflow)?
        }
        Unit::Hour | Unit::Minute | Unit::Second | Unit::Millisecond => return Err(overflow()),
    };
    Ok(Some(Bson::DateTime(bson::DateTime::from_millis(tz.utc_of_local(local)))))
}

/// `$dateToParts`: the calendar fields of a date (ISO week fields with `iso8601: true`).
fn date_to_parts(args: &Args) -> Result<Value> {
    let Some(ms) = date_arg(&get(args, "date"))? else {
        return Ok(Some(Bson::Null));
    };
    let Some(tz) = timezone(&get(args, "timezone"))? else { return Ok(Some(Bson::Null)) };
    let p = parts(tz.to_local(ms));
    let iso = matches!(get(args, "iso8601"), Some(Bson::Boolean(true)));
    let mut d = bson::Document::new();
    if iso {
        let (y, w, wd) = iso_week(&p);
        d.insert("isoWeekYear", y as i32);
        d.insert("isoWeek", w as i32);
        d.insert("isoDayOfWeek", wd as i32);
    } else {
        d.insert("year", p.year as i32);
        d.insert("month", p.month as i32);
        d.insert("day", p.day as i32);
    }
    d.insert("hour", p.hour as i32);
    d.insert("minute", p.minute as i32);
    d.insert("second", p.second as i32);
    d.insert("millisecond", p.milli as i32);
    Ok(Some(Bson::Document(d)))
}

/// `$dateFromParts`: a date from calendar (or ISO week) fields; out-of-range fields carry over,
/// as in MongoDB (`month: 14` is February of the next year).
fn date_from_parts(args: &Args) -> Result<Value> {
    let num = |k: &str, default: i64| -> Result<Option<i64>> {
        let v = match get(args, k) {
            None => return Ok(Some(default)),
            Some(Bson::Null) | Some(Bson::Undefined) => return Ok(None),
            Some(v) => v,
        };
        let Some(n) = as_int(&v) else {
            return Err(loc(
                40515,
                format!(
                    "'{k}' must evaluate to an integer, found {} with value {}",
                    type_name(&v),
                    crate::doc::fmt::value_string(&v)
                ),
            ));
        };
        if k == "year" || k == "isoWeekYear" {
            if !(1..=9999).contains(&n) {
                return Err(loc(
                    40523,
                    format!("'{k}' must evaluate to an integer in the range 1 to 9999, found {n}"),
                ));
            }
        } else if !(-32768..=32767).contains(&n) {
            return Err(loc(
                31034,
                format!(
                    "'{k}' must evaluate to a value in the range [-32768, 32767]; value {n} is not in range"
                ),
            ));
        }
        Ok(Some(n))
    };
    let iso = given(args, "isoWeekYear").is_some();
    let natural = ["year", "month", "day"].iter().any(|k| given(args, k).is_some());
    let iso_fields =
        ["isoWeekYear", "isoWeek", "isoDayOfWeek"].iter().any(|k| given(args, k).is_some());
    if natural && iso_fields {
        return Err(loc(
            40489,
            "$dateFromParts does not allow mixing natural dates with ISO dates",
        ));
    }
    if !iso && given(args, "year").is_none() {
        return Err(loc(
            40516,
            "$dateFromParts requires either 'year' or 'isoWeekYear' to be present",
        ));
    }
    let Some(tz) = timezone(&get(args, "timezone"))? else { return Ok(Some(Bson::Null)) };
    let fields = [("hour", 0), ("minute", 0), ("second", 0), ("millisecond", 0)];
    let mut t = [0i64; 4];
    for (i, (k, d)) in fields.iter().enumerate() {
        match num(k, *d)? {
            Some(v) => t[i] = v,
            None => return Ok(Some(Bson::Null)),
        }
    }
    let days = if iso {
        let (Some(y), Some(w), Some(wd)) =
            (num("isoWeekYear", 0)?, num("isoWeek", 1)?, num("isoDayOfWeek", 1)?)
        else {
            return Ok(Some(Bson::Null));
        };
        // ISO week 1 holds January 4th; its Monday starts the ISO year.
        let jan4 = days_from_civil(y, 1, 4);
        let monday = jan4 - ((jan4 + 3).rem_euclid(7));
        monday + (w - 1) * 7 + (wd - 1)
    } else {
        let (Some(y), Some(m), Some(d)) = (num("year", 1970)?, num("month", 1)?, num("day", 1)?)
        else {
            return Ok(Some(Bson::Null));
        };
        let total = y * 12 + (m - 1);
        let (yy, mm) = (total.div_euclid(12), (total.rem_euclid(12) + 1) as u32);
        days_from_civil(yy, mm, 1) + (d - 1)
    };
    let local = days * MS_PER_DAY + t[0] * 3_600_000 + t[1] * 60_000 + t[2] * 1000 + t[3];
    Ok(Some(Bson::DateTime(bson::DateTime::from_millis(tz.utc_of_local(local)))))
}
