//! The AWS-owned action types Slipway runs: their artifact bounds and configuration keys,
//! as ListActionTypes reports them and as declaration validation checks them.

/// One configuration key of an action type.
#[derive(Debug, Clone, Copy)]
pub struct Property {
    pub name: &'static str,
    pub required: bool,
    pub key: bool,
    pub secret: bool,
    pub queryable: bool,
    pub kind: &'static str,
}

const fn prop(name: &'static str, required: bool) -> Property {
    Property {
        name,
        required,
        key: true,
        secret: false,
        queryable: false,
        kind: "String",
    }
}

/// An action type: (category, owner, provider, version) with its bounds and keys.
#[derive(Debug, Clone, Copy)]
pub struct ActionType {
    pub category: &'static str,
    pub owner: &'static str,
    pub provider: &'static str,
    pub version: &'static str,
    pub inputs: (i32, i32),
    pub outputs: (i32, i32),
    pub properties: &'static [Property],
    /// Whether it can start a pipeline (a source action).
    pub source: bool,
}

const CODEBUILD_PROPS: &[Property] = &[
    prop("ProjectName", true),
    prop("PrimarySource", false),
    prop("EnvironmentVariables", false),
    prop("BatchEnabled", false),
    prop("CombineArtifacts", false),
];

/// Every AWS-owned action type Slipway runs.
pub const BUILT_IN: &[ActionType] = &[
    ActionType {
        category: "Source",
        owner: "AWS",
        provider: "CodeCommit",
        version: "1",
        inputs: (0, 0),
        outputs: (1, 1),
        properties: &[
            prop("RepositoryName", true),
            prop("BranchName", true),
            prop("PollForSourceChanges", false),
            prop("OutputArtifactFormat", false),
        ],
        source: true,
    },
    ActionType {
        category: "Source",
        owner: "AWS",
        provider: "S3",
        version: "1",
        inputs: (0, 0),
        outputs: (1, 1),
        properties: &[
            prop("S3Bucket", true),
            prop("S3ObjectKey", true),
            prop("PollForSourceChanges", false),
        ],
        source: true,
    },
    ActionType {
        category: "Build",
        owner: "AWS",
        provider: "CodeBuild",
        version: "1",
        inputs: (1, 5),
        outputs: (0, 5),
        properties: CODEBUILD_PROPS,
        source: false,
    },
    ActionType {
        category: "Test",
        owner: "AWS",
        provider: "CodeBuild",
        version: "1",
        inputs: (1, 5),
        outputs: (0, 5),
        properties: CODEBUILD_PROPS,
        source: false,
    },
    ActionType {
        category: "Approval",
        owner: "AWS",
        provider: "Manual",
        version: "1",
        inputs: (0, 0),
        outputs: (0, 0),
        properties: &[
            prop("CustomData", false),
            prop("ExternalEntityLink", false),
            prop("NotificationArn", false),
        ],
        source: false,
    },
    ActionType {
        category: "Deploy",
        owner: "AWS",
        provider: "S3",
        version: "1",
        inputs: (1, 1),
        outputs: (0, 0),
        properties: &[
            prop("BucketName", true),
            prop("Extract", true),
            prop("ObjectKey", false),
            prop("KMSEncryptionKeyARN", false),
            prop("CannedACL", false),
            prop("CacheControl", false),
        ],
        source: false,
    },
    ActionType {
        category: "Deploy",
        owner: "AWS",
        provider: "CodeDeploy",
        version: "1",
        inputs: (1, 1),
        outputs: (0, 0),
        properties: &[
            prop("ApplicationName", true),
            prop("DeploymentGroupName", true),
        ],
        source: false,
    },
    ActionType {
        category: "Compute",
        owner: "AWS",
        provider: "Commands",
        version: "1",
        inputs: (1, 10),
        outputs: (0, 1),
        properties: &[],
        source: false,
    },
    ActionType {
        category: "Invoke",
        owner: "AWS",
        provider: "CodePipeline",
        version: "1",
        inputs: (0, 0),
        outputs: (0, 0),
        properties: &[
            prop("PipelineName", true),
            prop("Variables", false),
            prop("SourceRevisions", false),
        ],
        source: false,
    },
];

/// The built-in type with this id, if any.
pub fn built_in(
    category: &str,
    owner: &str,
    provider: &str,
    version: &str,
) -> Option<&'static ActionType> {
    BUILT_IN.iter().find(|t| {
        t.category == category && t.owner == owner && t.provider == provider && t.version == version
    })
}
