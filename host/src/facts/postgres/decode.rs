//! PostgreSQL's binary values as the plugin's SQL values. Times become
//! ISO-8601 text (UTC, microseconds) so a value read can be written back
//! into a compare-and-swap exactly; arrays become a JSON array in text;
//! a type with no faithful form here is an error that says to cast it.

use crate::facts::sqlite::Value;
use postgres_protocol::types as wire;
use tokio_postgres::types::{FromSql, Kind, Type};

/// A column's raw bytes, whatever its type (NULL as None).
pub struct Raw<'a>(pub Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Raw(Some(raw)))
    }
    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Raw(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

/// `column`'s value of type `ty`; Err names the type when doctor cannot carry it.
pub fn value(ty: &Type, raw: Option<&[u8]>) -> Result<Value, String> {
    let Some(raw) = raw else {
        return Ok(Value::Null);
    };
    scalar(ty, raw).map_err(|e| e.unwrap_or_else(|| unsupported(ty)))
}

fn unsupported(ty: &Type) -> String {
    format!(
        "has type {}, which doctor does not pass to plugins; cast it in the query (e.g. column::text)",
        ty.name()
    )
}

/// Ok: the value; Err(None): not a type doctor carries; Err(Some): bad bytes.
fn scalar(ty: &Type, raw: &[u8]) -> Result<Value, Option<String>> {
    let bad = |e: BoxError| Some(format!("cannot decode {}: {e}", ty.name()));
    let value = match *ty {
        Type::BOOL => Value::Integer(wire::bool_from_sql(raw).map_err(bad)? as i64),
        Type::INT2 => Value::Integer(wire::int2_from_sql(raw).map_err(bad)?.into()),
        Type::INT4 => Value::Integer(wire::int4_from_sql(raw).map_err(bad)?.into()),
        Type::INT8 => Value::Integer(wire::int8_from_sql(raw).map_err(bad)?),
        Type::OID => Value::Integer(wire::oid_from_sql(raw).map_err(bad)?.into()),
        Type::FLOAT4 => Value::Real(wire::float4_from_sql(raw).map_err(bad)?.into()),
        Type::FLOAT8 => Value::Real(wire::float8_from_sql(raw).map_err(bad)?),
        Type::NUMERIC => Value::Text(numeric(raw).ok_or_else(|| bad("malformed".into()))?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::JSON | Type::UNKNOWN => {
            Value::Text(text(raw).map_err(bad)?)
        }
        Type::JSONB => match raw.split_first() {
            Some((1, json)) => Value::Text(text(json).map_err(bad)?),
            _ => return Err(bad("unknown jsonb version".into())),
        },
        Type::BYTEA => Value::Blob(raw.to_vec()),
        Type::UUID => Value::Text(uuid(wire::uuid_from_sql(raw).map_err(bad)?)),
        Type::TIMESTAMPTZ => {
            Value::Text(timestamp(wire::timestamp_from_sql(raw).map_err(bad)?, true))
        }
        Type::TIMESTAMP => Value::Text(timestamp(
            wire::timestamp_from_sql(raw).map_err(bad)?,
            false,
        )),
        Type::DATE => Value::Text(date(wire::date_from_sql(raw).map_err(bad)?)),
        _ => match ty.kind() {
            // An enum's binary form is its label; a citext's is its text.
            Kind::Enum(_) => Value::Text(text(raw).map_err(bad)?),
            Kind::Simple if ty.name() == "citext" => Value::Text(text(raw).map_err(bad)?),
            Kind::Domain(base) => return scalar(base, raw),
            Kind::Array(element) => Value::Text(array(element, raw)?),
            _ => return Err(None),
        },
    };
    Ok(value)
}

fn text(raw: &[u8]) -> Result<String, BoxError> {
    Ok(std::str::from_utf8(raw)?.to_string())
}

/// A one-dimensional (or nested) array as JSON text: `["a","b"]`.
fn array(element: &Type, raw: &[u8]) -> Result<String, Option<String>> {
    use postgres_protocol::types::ArrayDimension;
    use tokio_postgres::fallible_iterator::FallibleIterator;
    let bad = |e: BoxError| Some(format!("cannot decode an array: {e}"));
    let array = wire::array_from_sql(raw).map_err(bad)?;
    let dims: Vec<ArrayDimension> = array.dimensions().collect().map_err(bad)?;
    let mut values = Vec::new();
    let mut items = array.values();
    while let Some(item) = items.next().map_err(bad)? {
        let v = match item {
            None => serde_json::Value::Null,
            Some(raw) => match scalar(element, raw)? {
                Value::Null => serde_json::Value::Null,
                Value::Integer(i) => i.into(),
                Value::Real(f) => f.into(),
                Value::Text(t) => t.into(),
                Value::Blob(b) => hex::encode(b).into(),
            },
        };
        values.push(v);
    }
    // Nest from the innermost dimension out; an empty array is [].
    for dim in dims.iter().skip(1).rev() {
        let len = usize::try_from(dim.len).unwrap_or(0).max(1);
        values = values
            .chunks(len)
            .map(|c| serde_json::Value::Array(c.to_vec()))
            .collect();
    }
    Ok(serde_json::Value::Array(values).to_string())
}

fn uuid(b: [u8; 16]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Days from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_DAYS: i64 = 10_957;

fn timestamp(micros: i64, zoned: bool) -> String {
    match micros {
        i64::MAX => return "infinity".into(),
        i64::MIN => return "-infinity".into(),
        _ => {}
    }
    let days = micros.div_euclid(86_400_000_000);
    let of_day = micros.rem_euclid(86_400_000_000);
    let (h, m) = (of_day / 3_600_000_000, of_day / 60_000_000 % 60);
    let (s, us) = (of_day / 1_000_000 % 60, of_day % 1_000_000);
    format!(
        "{}T{h:02}:{m:02}:{s:02}.{us:06}{}",
        civil(days + PG_EPOCH_DAYS),
        if zoned { "+00:00" } else { "" }
    )
}

fn date(days: i32) -> String {
    match days {
        i32::MAX => "infinity".into(),
        i32::MIN => "-infinity".into(),
        d => civil(i64::from(d) + PG_EPOCH_DAYS),
    }
}

/// `YYYY-MM-DD` of a day counted from 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// NUMERIC's binary form (base-10000 digits with a weight) as exact decimal text.
fn numeric(raw: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<i16> {
        Some(i16::from_be_bytes([*raw.get(2 * i)?, *raw.get(2 * i + 1)?]))
    };
    let (ndigits, weight) = (usize::try_from(word(0)?).ok()?, word(1)?);
    let (sign, dscale) = (word(2)? as u16, usize::try_from(word(3)?).ok()?);
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        _ => {}
    }
    let digits: Vec<i16> = (0..ndigits).map(|i| word(4 + i)).collect::<Option<_>>()?;
    let digit = |pos: i32| -> i16 {
        usize::try_from(pos)
            .ok()
            .and_then(|p| digits.get(p).copied())
            .unwrap_or(0)
    };
    let mut int = String::new();
    for pos in 0..=i32::from(weight).max(0) {
        let d = if weight < 0 { 0 } else { digit(pos) };
        if int.is_empty() {
            int = d.to_string();
        } else {
            int.push_str(&format!("{d:04}"));
        }
    }
    let mut frac = String::new();
    let mut pos = i32::from(weight) + 1;
    while frac.len() < dscale {
        frac.push_str(&format!("{:04}", digit(pos)));
        pos += 1;
    }
    frac.truncate(dscale);
    let minus = if sign == 0x4000 { "-" } else { "" };
    Some(if dscale == 0 {
        format!("{minus}{int}")
    } else {
        format!("{minus}{int}.{frac}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_iso_utc_with_microseconds() {
        // 2026-12-06 14:50:00.123456 is 849,883,800.123456 s after 2000-01-01.
        let micros = 849_883_800_123_456;
        assert_eq!(timestamp(micros, true), "2026-12-06T14:50:00.123456+00:00");
        assert_eq!(timestamp(micros, false), "2026-12-06T14:50:00.123456");
        assert_eq!(timestamp(-1, false), "1999-12-31T23:59:59.999999");
        assert_eq!(date(0), "2000-01-01");
    }

    #[test]
    fn numerics_are_exact_text() {
        // 12345.678: weight 1, digits [1, 2345, 6780], dscale 3.
        let mut raw = Vec::new();
        for w in [3i16, 1, 0, 3, 1, 2345, 6780] {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(numeric(&raw).as_deref(), Some("12345.678"));
        // -0.05: weight -1, digits [500], dscale 2.
        let mut raw = Vec::new();
        for w in [1i16, -1, 0x4000u16 as i16, 2, 500] {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(numeric(&raw).as_deref(), Some("-0.05"));
    }

    #[test]
    fn an_unsupported_type_says_to_cast() {
        let why = value(&Type::INTERVAL, Some(&[0; 16])).unwrap_err();
        assert!(why.contains("interval") && why.contains("::text"), "{why}");
    }
}
