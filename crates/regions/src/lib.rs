//! Region names: which ones Slipway serves (every region of every AWS partition, generated
//! from botocore's `partitions.json` into [`generated::REGIONS`]) and the ARN partition each
//! belongs to. A crate of its own so every domain crate can name regions without the API
//! layer.

pub mod generated;

use generated::REGIONS;

/// Whether `name` is a region of some AWS partition, and so one Slipway serves.
pub fn is_known(name: &str) -> bool {
    REGIONS.binary_search_by(|(r, _)| (*r).cmp(name)).is_ok()
}

/// Every region name, sorted.
pub fn all() -> impl Iterator<Item = &'static str> {
    REGIONS.iter().map(|(r, _)| *r)
}

/// The ARN partition of a region's resources (`aws`, `aws-cn`, `aws-us-gov`, …); `aws` for a
/// name that is not a known region.
pub fn partition(region: &str) -> &'static str {
    REGIONS
        .binary_search_by(|(r, _)| (*r).cmp(region))
        .map_or("aws", |i| REGIONS[i].1)
}

/// The ARN of a regional resource: `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`.
pub fn arn(service: &str, region: &str, account: &str, resource: &str) -> String {
    format!(
        "arn:{}:{service}:{region}:{account}:{resource}",
        partition(region)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_of_every_partition_are_known() {
        for (r, p) in [
            ("us-east-1", "aws"),
            ("eu-central-1", "aws"),
            ("ap-southeast-7", "aws"),
            ("cn-north-1", "aws-cn"),
            ("us-gov-west-1", "aws-us-gov"),
            ("us-isob-east-1", "aws-iso-b"),
        ] {
            assert!(is_known(r), "{r}");
            assert_eq!(partition(r), p, "{r}");
        }
        for r in [
            "",
            "us-east-99",
            "aws-global",
            "US-EAST-1",
            "moon-1",
            "us-east-1 ",
        ] {
            assert!(!is_known(r), "{r:?}");
        }
        assert!(REGIONS.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
    }

    #[test]
    fn arns_name_the_partition() {
        assert_eq!(
            arn("codecommit", "cn-north-1", "1", "r"),
            "arn:aws-cn:codecommit:cn-north-1:1:r"
        );
        assert_eq!(
            arn("codebuild", "eu-west-1", "1", "project/p"),
            "arn:aws:codebuild:eu-west-1:1:project/p"
        );
    }
}
