//! Tests of the validating rules.
