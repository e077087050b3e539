//! Time zones for the date expressions.
//!
//! A date expression's `timezone` is one of three things, as in MongoDB:
//!
//! - `"UTC"`: the UTC zone (also what a missing `timezone` means);
//! - a fixed offset: `"+05:30"`, `"-0800"` or `"+03"`;
//! - an Olson identifier from the time zone database: `"America/New_York"`, `"Europe/London"`,
//!   `"GMT"`, `"Etc/GMT+5"`. The database is the one compiled into the `chrono-tz` crate, so the
//!   results do not depend on the host's `/usr/share/zoneinfo`.
//!
//! A named zone's offset depends on the instant (daylight saving time, and historical changes
//! of a region's standard time), so every conversion asks for the offset *at the instant*:
//!
//! - UTC to local time ([`Tz::to_local`]) is a function: look the offset up at the UTC instant.
//! - Local time to UTC ([`Tz::utc_of_local`]) is not: in a spring-forward gap a wall-clock time
//!   does not exist, and in a fall-back overlap it exists twice. MongoDB resolves both the way
//!   its date library (timelib) does, and so does Folio, step for step: take the offset at the
//!   wall-clock time read as if it were UTC (`current`), then the offset at the instant that
//!   `current` gives (`actual`). If the two differ and the time is not inside a gap, `actual`
//!   applies; otherwise `current` does. The outcome: a time in a gap is read with the offset
//!   from before the gap (02:30 on a New York spring-forward day is 03:30 EDT), and an
//!   ambiguous time resolves to whichever offset the wall-clock-as-UTC instant falls in (01:30
//!   on a New York fall-back day is the first, EDT, occurrence; 02:30 on a Berlin fall-back day
//!   is the second, CET, one).
//!
//! Offsets are kept in seconds because historical local mean times (New York before 1883 was
//! UTC-4:56:02) are not whole minutes.

use std::str::FromStr;

use bson::Bson;
use chrono::{Offset, TimeZone};

use super::{Value, loc, type_name};
use crate::error::Result;

/// A time zone a date expression computes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tz {
    /// UTC (`"UTC"`, or no `timezone` at all).
    Utc,
    /// A fixed offset from UTC, in seconds (`"+05:30"`).
    Fixed(i64),
    /// A zone of the time zone database (`"America/New_York"`).
    Named(chrono_tz::Tz),
}

impl Tz {
    /// Parses a `timezone` string: `"UTC"`, a `±HH`, `±HHMM` or `±HH:MM` offset, or an Olson
    /// identifier (case-sensitive, as in MongoDB). `None` when it is none of them.
    pub fn parse(s: &str) -> Option<Tz> {
        if s == "UTC" {
            return Some(Tz::Utc);
        }
        if let Some(secs) = parse_offset(s) {
            return Some(Tz::Fixed(secs));
        }
        chrono_tz::Tz::from_str(s).ok().map(Tz::Named)
    }

    /// Whether this is the UTC zone itself (or a zero fixed offset). `"GMT"` and
    /// `"Europe/London"` are named zones, not UTC, even where their offset is zero: MongoDB's
    /// `$dateToString` then prints its default format without the trailing `Z`.
    pub fn is_utc(self) -> bool {
        matches!(self, Tz::Utc | Tz::Fixed(0))
    }

    /// The offset from UTC, in seconds, at the UTC instant `ms` (milliseconds since the epoch).
    pub fn offset_secs(self, ms: i64) -> i64 {
        match self {
            Tz::Utc => 0,
            Tz::Fixed(secs) => secs,
            Tz::Named(tz) => named_offset(tz, ms),
        }
    }

    /// The local wall-clock time at the UTC instant `ms`, as milliseconds since the local epoch.
    pub fn to_local(self, ms: i64) -> i64 {
        ms.saturating_add(self.offset_secs(ms) * 1000)
    }

    /// The UTC instant of a local wall-clock time (milliseconds since the local epoch), with
    /// gaps and overlaps resolved as the module documentation describes.
    pub fn utc_of_local(self, local: i64) -> i64 {
        let Tz::Named(tz) = self else {
            return local.saturating_sub(self.offset_secs(0) * 1000);
        };
        let current = named_offset(tz, local);
        let actual = named_offset(tz, local.saturating_sub(current * 1000));
        let candidate = local.saturating_sub(actual * 1000);
        // Inside a spring-forward gap `candidate` lies in the last `actual - current` seconds
        // before the transition into `actual`.
        let jump = (actual - current) * 1000;
        let in_gap = jump > 0
            && named_offset(tz, candidate) != actual
            && named_offset(tz, candidate.saturating_add(jump)) == actual;
        if current != actual && !in_gap { candidate } else { local.saturating_sub(current * 1000) }
    }
}

/// The offset of a named zone at a UTC instant. Instants beyond the calendar range of the
/// database (hundreds of thousands of years away) take the offset at the nearest end of it.
fn named_offset(tz: chrono_tz::Tz, ms: i64) -> i64 {
    const LIMIT: i64 = 8_000_000_000_000_000; // about 250,000 years, inside chrono's range
    let clamped = ms.clamp(-LIMIT, LIMIT);
    match chrono::DateTime::from_timestamp_millis(clamped) {
        Some(utc) => {
            i64::from(tz.offset_from_utc_datetime(&utc.naive_utc()).fix().local_minus_utc())
        }
        None => 0,
    }
}

/// A UTC offset as MongoDB spells it in a `timezone`: `±HH`, `±HHMM` or `±HH:MM`, in seconds.
pub fn parse_offset(s: &str) -> Option<i64> {
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let rest = &s[1..];
    let digits = |x: &str| x.len() == 2 && x.bytes().all(|b| b.is_ascii_digit());
    let (h, m) = match rest.len() {
        2 if digits(rest) => (&rest[..2], "00"),
        4 if digits(&rest[..2]) && digits(&rest[2..]) => (&rest[..2], &rest[2..]),
        5 if digits(&rest[..2]) && &rest[2..3] == ":" && digits(&rest[3..]) => {
            (&rest[..2], &rest[3..])
        }
        _ => return None,
    };
    let h: i64 = h.parse().ok()?;
    let m: i64 = m.parse().ok()?;
    Some(sign * (h * 3600 + m * 60))
}

/// A date expression's `timezone` argument: UTC when absent, `Ok(None)` when null (the
/// expression then returns null), error 40485 for an unknown identifier and 40517 for a
/// non-string.
pub fn timezone_arg(v: &Value) -> Result<Option<Tz>> {
    match v {
        None => Ok(Some(Tz::Utc)),
        Some(Bson::Null) | Some(Bson::Undefined) => Ok(None),
        Some(Bson::String(s)) => Tz::parse(s)
            .map(Some)
            .ok_or_else(|| loc(40485, format!("unrecognized time zone identifier: \"{s}\""))),
        Some(other) => Err(loc(
            40517,
            format!("timezone must evaluate to a string, found {}", type_name(other)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::Tz;

    /// 2020-03-08 and 2020-11-01 are New York's DST changes; 2020-03-29 and 2020-10-25 Berlin's.
    fn utc(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).map(|d| d.timestamp_millis()).unwrap_or(i64::MIN)
    }

    fn local(s: &str) -> i64 {
        utc(&format!("{s}Z"))
    }

    #[test]
    fn offsets_follow_daylight_saving_time() {
        let ny = Tz::parse("America/New_York").expect("zone");
        assert_eq!(ny.offset_secs(utc("2020-03-08T06:59:59Z")), -5 * 3600);
        assert_eq!(ny.offset_secs(utc("2020-03-08T07:00:00Z")), -4 * 3600);
        assert_eq!(ny.offset_secs(utc("2020-11-01T05:59:59Z")), -4 * 3600);
        assert_eq!(ny.offset_secs(utc("2020-11-01T06:00:00Z")), -5 * 3600);
    }

    #[test]
    fn local_times_resolve_like_mongodb() {
        let ny = Tz::parse("America/New_York").expect("zone");
        let berlin = Tz::parse("Europe/Berlin").expect("zone");
        // Ordinary times round-trip.
        assert_eq!(ny.utc_of_local(local("2020-07-01T12:00:00")), utc("2020-07-01T16:00:00Z"));
        assert_eq!(ny.utc_of_local(local("2020-03-08T01:30:00")), utc("2020-03-08T06:30:00Z"));
        assert_eq!(ny.utc_of_local(local("2020-03-08T03:30:00")), utc("2020-03-08T07:30:00Z"));
        // A gap takes the offset from before it.
        assert_eq!(ny.utc_of_local(local("2020-03-08T02:30:00")), utc("2020-03-08T07:30:00Z"));
        assert_eq!(berlin.utc_of_local(local("2020-03-29T02:30:00")), utc("2020-03-29T01:30:00Z"));
        // Overlaps: New York's first occurrence, Berlin's second.
        assert_eq!(ny.utc_of_local(local("2020-11-01T01:30:00")), utc("2020-11-01T05:30:00Z"));
        assert_eq!(berlin.utc_of_local(local("2020-10-25T02:30:00")), utc("2020-10-25T01:30:00Z"));
        assert_eq!(berlin.utc_of_local(local("2020-03-29T01:30:00")), utc("2020-03-29T00:30:00Z"));
    }

    #[test]
    fn identifiers_and_offsets_parse() {
        assert_eq!(Tz::parse("UTC"), Some(Tz::Utc));
        assert_eq!(Tz::parse("+05:30"), Some(Tz::Fixed(19800)));
        assert_eq!(Tz::parse("-0800"), Some(Tz::Fixed(-28800)));
        assert_eq!(Tz::parse("+03"), Some(Tz::Fixed(10800)));
        assert!(matches!(Tz::parse("GMT"), Some(Tz::Named(_))));
        assert_eq!(Tz::parse("+5:30"), None);
        assert_eq!(Tz::parse("america/new_york"), None);
        assert_eq!(Tz::parse("Mars/Olympus"), None);
    }
}
