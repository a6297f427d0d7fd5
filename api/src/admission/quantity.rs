//! Kubernetes quantities as exact integers of milli-units, and their canonical spelling.
//!
//! The grammar and the canonical form follow apimachinery's `resource.Quantity`, so what
//! the webhook writes back is what `kubectl get -o yaml` would show for the same value.
//! Precision stops at milli-units (`1m`): a finer value (`1n`, `1u`) rounds up to the next
//! milli-unit, the same way the kubelet rounds CPU requests.

use crate::quantity::ResourceQuantity;

/// Milli-units in one unit: cpu `"1"` is 1000, memory `"1Ki"` is 1,024,000.
pub const MILLI: i128 = 1000;

/// Why a quantity could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Nothing was written.
    #[error("quantity is empty; write a number such as \"10\", \"500m\" or \"100Gi\"")]
    Empty,
    /// The number in front of the suffix is malformed.
    #[error(
        "{text:?} is not a quantity: it must start with a number such as \"10\", \"0.5\" or \".5\"; write e.g. \"10\", \"500m\" or \"100Gi\""
    )]
    ParseNumber {
        /// The text as written.
        text: String,
    },
    /// The suffix after the number is not one Kubernetes knows.
    #[error(
        "{text:?} is not a quantity: unknown suffix {suffix:?}; use one of Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E or an exponent such as e3"
    )]
    ParseSuffix {
        /// The text as written.
        text: String,
        /// The part after the number.
        suffix: String,
    },
    /// The exponent after `e`/`E` is not an integer.
    #[error(
        "{text:?} is not a quantity: the exponent after \"e\" must be an integer, as in \"1e3\""
    )]
    ParseExponent {
        /// The text as written.
        text: String,
    },
    /// The value does not fit into the range kosmos-vc computes with.
    #[error(
        "{text:?} is too large: kosmos-vc accepts at most 20 significant digits and magnitudes up to 10^27 units"
    )]
    OutOfRange {
        /// The text as written.
        text: String,
    },
    /// A quantity in a named field or resource could not be read.
    #[error("{field}: {source}")]
    Field {
        /// Field path or resource name the quantity came from.
        field: String,
        /// What was wrong with it.
        #[source]
        source: Box<QuantityError>,
    },
}

impl QuantityError {
    /// The same error, saying which field or resource it came from.
    pub fn in_field(self, field: impl Into<String>) -> Self {
        Self::Field {
            field: field.into(),
            source: Box::new(self),
        }
    }
}

/// How a quantity was written, which decides how its canonical form is spelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// Powers of 1024: `Ki`, `Mi`, ...
    BinarySi,
    /// Powers of 1000 and no suffix: `m`, `k`, `M`, ...
    DecimalSi,
    /// Scientific notation: `1e3`.
    DecimalExponent,
}

/// Reads a Kubernetes quantity (`"10"`, `"500m"`, `"1.5Gi"`, `"2e3"`) as milli-units.
pub fn parse_quantity(text: &str) -> Result<i128, QuantityError> {
    parse_with_format(text).map(|(milli, _)| milli)
}

/// The canonical spelling apimachinery would store for `quantity`: `"100Gi"`, `"10"`,
/// `"1500m"` for `"1.5"`, `"12k"` for `"12000"`. `resource` names the quantity in errors.
pub fn canonical_quantity(
    resource: &str,
    quantity: &ResourceQuantity,
) -> Result<String, QuantityError> {
    canonical_form(quantity).map_err(|error| error.in_field(resource))
}

/// [`canonical_quantity`] without naming the field in errors.
pub(crate) fn canonical_form(quantity: &ResourceQuantity) -> Result<String, QuantityError> {
    let (milli, format) = match quantity {
        ResourceQuantity::Int(number) => (i128::from(*number) * MILLI, Format::DecimalSi),
        ResourceQuantity::String(text) => parse_with_format(text)?,
    };
    Ok(format_canonical(milli, format))
}

/// The milli-unit value of a spec quantity, whichever way it was written.
pub(crate) fn quantity_milli(quantity: &ResourceQuantity) -> Result<i128, QuantityError> {
    match quantity {
        ResourceQuantity::Int(number) => Ok(i128::from(*number) * MILLI),
        ResourceQuantity::String(text) => parse_quantity(text),
    }
}

/// An amount in the units an operator reads: whole bytes in binary units for memory-like
/// resources (`"16Gi"`), whole numbers or milli-units otherwise (`"16"`, `"1500m"`).
pub fn format_amount(resource: &str, milli: i128) -> String {
    if is_byte_resource(resource) {
        return format_canonical(milli, Format::BinarySi);
    }
    if milli % MILLI == 0 {
        (milli / MILLI).to_string()
    } else {
        format!("{milli}m")
    }
}

/// Resources counted in bytes, best shown in `Ki`/`Mi`/`Gi`.
fn is_byte_resource(resource: &str) -> bool {
    matches!(resource, "memory" | "ephemeral-storage" | "storage")
        || resource.starts_with("hugepages-")
}

/// Largest magnitude accepted, in milli-units (10^27 units, far beyond any host): sums
/// of millions of such amounts still fit an `i128`, so totals never overflow.
pub const MAX_MILLI: i128 = 1_000_000_000_000_000_000_000_000_000_000;

/// Largest number of significant digits kept; i128 holds 38 digits, and the mantissa may
/// still be multiplied by 2^60 for `Ei`.
const MAX_MANTISSA_DIGITS: usize = 20;

fn parse_with_format(text: &str) -> Result<(i128, Format), QuantityError> {
    if text.is_empty() {
        return Err(QuantityError::Empty);
    }
    let (negative, unsigned) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let number_end = unsigned
        .find(|character: char| !(character.is_ascii_digit() || character == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_end);
    let (integer_digits, fraction_digits) =
        split_number(number).ok_or_else(|| QuantityError::ParseNumber {
            text: text.to_owned(),
        })?;
    let (binary_shift, decimal_exponent, format) = interpret_suffix(text, suffix)?;
    let magnitude = scale_digits(
        text,
        integer_digits,
        fraction_digits,
        binary_shift,
        decimal_exponent,
    )?;
    if magnitude > MAX_MILLI {
        return Err(QuantityError::OutOfRange {
            text: text.to_owned(),
        });
    }
    Ok((if negative { -magnitude } else { magnitude }, format))
}

/// Splits `12.5` into `("12", "5")`; `None` unless it is `digits`, `digits.`, `.digits` or
/// `digits.digits`.
fn split_number(number: &str) -> Option<(&str, &str)> {
    let (integer, fraction) = number.split_once('.').unwrap_or((number, ""));
    let only_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    let valid = only_digits(integer)
        && only_digits(fraction)
        && !(integer.is_empty() && fraction.is_empty());
    valid.then_some((integer, fraction))
}

/// `(power of two, power of ten, format)` meant by a suffix.
fn interpret_suffix(text: &str, suffix: &str) -> Result<(u32, i64, Format), QuantityError> {
    let decimal = |exponent| Ok((0, exponent, Format::DecimalSi));
    let binary = |shift| Ok((shift, 0, Format::BinarySi));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ if suffix.starts_with(['e', 'E']) => {
            let exponent =
                parse_exponent(&suffix[1..]).ok_or_else(|| QuantityError::ParseExponent {
                    text: text.to_owned(),
                })?;
            Ok((0, exponent, Format::DecimalExponent))
        }
        _ => Err(QuantityError::ParseSuffix {
            text: text.to_owned(),
            suffix: suffix.to_owned(),
        }),
    }
}

/// A signed decimal integer, as Go's `strconv.ParseInt` reads it.
fn parse_exponent(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `integer.fraction × 2^binary_shift × 10^decimal_exponent` in milli-units, rounded up.
fn scale_digits(
    text: &str,
    integer: &str,
    fraction: &str,
    binary_shift: u32,
    decimal_exponent: i64,
) -> Result<i128, QuantityError> {
    let out_of_range = || QuantityError::OutOfRange {
        text: text.to_owned(),
    };
    let all_digits = format!("{integer}{fraction}");
    let significant = all_digits.trim_start_matches('0');
    let trimmed = significant.trim_end_matches('0');
    if trimmed.is_empty() {
        return Ok(0);
    }
    if trimmed.len() > MAX_MANTISSA_DIGITS {
        return Err(out_of_range());
    }
    let dropped_zeros = (significant.len() - trimmed.len()) as i64;
    let mantissa: i128 = trimmed.parse().map_err(|_| out_of_range())?;
    let shifted = mantissa
        .checked_mul(1_i128 << binary_shift)
        .ok_or_else(out_of_range)?;
    let exponent = decimal_exponent
        .checked_add(3 + dropped_zeros - fraction.len() as i64)
        .ok_or_else(out_of_range)?;
    if exponent >= 0 {
        let factor = u32::try_from(exponent)
            .ok()
            .and_then(|power| 10_i128.checked_pow(power))
            .ok_or_else(out_of_range)?;
        return shifted.checked_mul(factor).ok_or_else(out_of_range);
    }
    // A divisor beyond i128 makes any non-zero value smaller than one milli-unit: round up.
    let divisor = u32::try_from(-exponent)
        .ok()
        .and_then(|power| 10_i128.checked_pow(power));
    Ok(divisor.map_or(1, |divisor| ceiling_division(shifted, divisor)))
}

fn ceiling_division(value: i128, divisor: i128) -> i128 {
    value / divisor + i128::from(value % divisor != 0)
}

/// Spells `milli` the way apimachinery's `CanonicalizeBytes` does for `format`.
pub(crate) fn format_canonical(milli: i128, format: Format) -> String {
    if milli == 0 {
        return "0".to_owned();
    }
    let sign = if milli < 0 { "-" } else { "" };
    let magnitude = milli.unsigned_abs();
    let unit = MILLI.unsigned_abs();
    // Unlike apimachinery, a binary value that is not a whole number of Ki is spelt in
    // decimal units: apimachinery's bare "5952000" would read back as decimal and then
    // canonicalise to "5952k", and the canonical form must be a fixed point.
    let whole_kibi = magnitude.is_multiple_of(1024 * unit);
    if format == Format::BinarySi && whole_kibi {
        return format!("{sign}{}", binary_spelling(magnitude / unit));
    }
    let format = if format == Format::BinarySi {
        Format::DecimalSi
    } else {
        format
    };
    format!("{sign}{}", decimal_spelling(magnitude, format))
}

/// `units` is a positive multiple of 1024.
fn binary_spelling(units: u128) -> String {
    const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let mut mantissa = units;
    let mut power = 0;
    while mantissa.is_multiple_of(1024) && power + 1 < SUFFIXES.len() {
        mantissa /= 1024;
        power += 1;
    }
    format!("{mantissa}{}", SUFFIXES[power])
}

/// Mantissa with an exponent that is a multiple of three, as apimachinery writes it.
fn decimal_spelling(milli: u128, format: Format) -> String {
    let mut mantissa = milli;
    let mut exponent: i32 = -3;
    while mantissa.is_multiple_of(10) {
        mantissa /= 10;
        exponent += 1;
    }
    let remainder = exponent.rem_euclid(3);
    mantissa *= 10_u128.pow(remainder.unsigned_abs());
    exponent -= remainder;
    if format == Format::DecimalExponent {
        return if exponent == 0 {
            mantissa.to_string()
        } else {
            format!("{mantissa}e{exponent}")
        };
    }
    if exponent > 18 {
        mantissa *= 10_u128.pow((exponent - 18).unsigned_abs());
        exponent = 18;
    }
    let suffix = match exponent {
        -3 => "m",
        3 => "k",
        6 => "M",
        9 => "G",
        12 => "T",
        15 => "P",
        18 => "E",
        _ => "",
    };
    format!("{mantissa}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_every_suffix_family() {
        let cases = [
            ("10", 10_000),
            ("500m", 500),
            ("1.5", 1_500),
            (".5", 500),
            ("5.", 5_000),
            ("+2", 2_000),
            ("-2", -2_000),
            ("1Ki", 1_024_000),
            ("1.5Gi", 1_610_612_736_000),
            ("2k", 2_000_000),
            ("1M", 1_000_000_000),
            ("1E", 1_000_000_000_000_000_000_000),
            ("1Ei", 1_152_921_504_606_846_976_000),
            ("2e3", 2_000_000),
            ("2E3", 2_000_000),
            ("25e-1", 2_500),
            ("1e+2", 100_000),
            ("1u", 1),
            ("1n", 1),
            ("1500n", 1),
            ("0.0001", 1),
            ("007", 7_000),
            ("0", 0),
            ("0.000", 0),
        ];
        for (text, milli) in cases {
            assert_eq!(parse_quantity(text), Ok(milli), "{text}");
        }
    }

    #[test]
    fn refuses_malformed_text_naming_what_is_wrong() {
        assert_eq!(parse_quantity(""), Err(QuantityError::Empty));
        assert_eq!(
            parse_quantity("abc").unwrap_err().to_string(),
            "\"abc\" is not a quantity: it must start with a number such as \"10\", \"0.5\" or \".5\"; write e.g. \"10\", \"500m\" or \"100Gi\""
        );
        assert_eq!(
            parse_quantity("10GB").unwrap_err().to_string(),
            "\"10GB\" is not a quantity: unknown suffix \"GB\"; use one of Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E or an exponent such as e3"
        );
        // Which step refused each text: where it stops reading says what the message names.
        type RefusedBy = fn(&QuantityError) -> bool;
        let refusals: [(RefusedBy, &[&str]); 4] = [
            (
                |error| matches!(error, QuantityError::ParseNumber { .. }),
                &["1.2.3", ".", " 1"],
            ),
            (
                |error| matches!(error, QuantityError::ParseSuffix { .. }),
                &["1 "],
            ),
            (
                |error| matches!(error, QuantityError::ParseExponent { .. }),
                &["1e", "1e1.5"],
            ),
            (
                |error| matches!(error, QuantityError::OutOfRange { .. }),
                &["1e400", "1e28", "99999999999999999999999Ei"],
            ),
        ];
        for (refused_by, texts) in refusals {
            for text in texts {
                let refusal = parse_quantity(text);
                assert!(
                    refusal.as_ref().is_err_and(refused_by),
                    "{text:?}: {refusal:?}"
                );
            }
        }
        assert_eq!(parse_quantity("1e27"), Ok(MAX_MILLI));
    }

    #[test]
    fn canonical_forms_match_apimachinery() {
        let cases: [(ResourceQuantity, &str); 16] = [
            ("100Gi".into(), "100Gi"),
            (10.into(), "10"),
            ("10".into(), "10"),
            ("1.5".into(), "1500m"),
            ("500m".into(), "500m"),
            ("1024Mi".into(), "1Gi"),
            ("1536Mi".into(), "1536Mi"),
            ("1.5Ki".into(), "1536"),
            ("0.5Ki".into(), "512"),
            ("12000".into(), "12k"),
            ("1000m".into(), "1"),
            ("1e3".into(), "1e3"),
            ("1.5e3".into(), "1500"),
            ("0Gi".into(), "0"),
            ("5812.5Ki".into(), "5952k"),
            ("1025Ki".into(), "1025Ki"),
        ];
        for (quantity, canonical) in cases {
            assert_eq!(
                canonical_quantity("memory", &quantity).unwrap(),
                canonical,
                "{quantity}"
            );
        }
    }

    #[test]
    fn canonical_errors_name_the_resource() {
        let error = canonical_quantity("cpu", &"ten".into()).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cpu: \"ten\" is not a quantity"),
            "{error}"
        );
    }

    #[test]
    fn amounts_read_like_an_operator_writes_them() {
        assert_eq!(format_amount("cpu", 16_000), "16");
        assert_eq!(format_amount("cpu", 1_500), "1500m");
        assert_eq!(
            format_amount("memory", 16 * 1024 * 1024 * 1024 * MILLI),
            "16Gi"
        );
        assert_eq!(format_amount("memory", 1_000 * MILLI), "1k");
        assert_eq!(format_amount("nvidia.com/gpu", 2_000), "2");
        assert_eq!(format_amount("cpu", -1_500), "-1500m");
        assert_eq!(format_amount("memory", -2 * 1_024 * MILLI), "-2Ki");
        assert_eq!(
            format_amount("memory", i128::MIN),
            format!("{}m", i128::MIN)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn canonical_form_is_stable_and_keeps_the_value(
            digits in 0_u64..10_000_000,
            scale in 0_usize..4,
            suffix in prop::sample::select(vec!["", "m", "k", "M", "G", "Ki", "Mi", "Gi", "Ti", "e3", "e-2"]),
        ) {
            let text = if scale == 0 {
                format!("{digits}{suffix}")
            } else {
                let padded = format!("{digits:0>5}");
                let (integer, fraction) = padded.split_at(padded.len() - scale);
                format!("{integer}.{fraction}{suffix}")
            };
            let value = parse_quantity(&text).unwrap();
            let canonical = canonical_form(&ResourceQuantity::String(text.clone())).unwrap();
            prop_assert_eq!(parse_quantity(&canonical).unwrap(), value, "{} -> {}", text, canonical);
            let again = canonical_form(&ResourceQuantity::String(canonical.clone())).unwrap();
            prop_assert_eq!(again, canonical);
        }
    }
}
