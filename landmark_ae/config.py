"""Config schemas (dataclasses in Hydra's ConfigStore) and where the YAML configs live.

The schemas hold every key's default, once; the YAML files in conf/ pick config-group options and
state only what differs from these defaults (`landmark-ae <command> --cfg job` prints the result).
Types are checked by OmegaConf while Hydra composes (``epochs=abc`` fails there); value ranges
are declared next to each field (``metadata={"min": ...}``) and checked by :func:`validate`
before a command does any work.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from landmark_ae.common import default_output_dir


def config_dir() -> str:
    """The YAML configs: shipped inside the wheel as landmark_ae/conf, or the repo's top-level conf/."""
    packaged = Path(__file__).resolve().parent / "conf"
    if (packaged / "train.yaml").is_file():
        return str(packaged)
    return str(Path(__file__).resolve().parent.parent / "conf")


def model_yaml(name: str) -> dict:
    """conf/model/<name>.yaml as the plain dict build_model takes (benchmarks and tests; `train`
    composes it through Hydra instead)."""

    cfg = OmegaConf.to_container(OmegaConf.load(Path(config_dir()) / "model" / f"{name}.yaml"))
    cfg.pop("defaults", None)
    return cfg


def enum_value(value: Any) -> Any:
    """A config value as plain data: an enum member (e.g. Pooling.avg) becomes its value ("avg")."""
    return value.value if isinstance(value, enum.Enum) else value


def _min(value: float, default: Any = MISSING, **kw: Any) -> Any:
    return field(default=default, metadata={"min": value, **kw})


# A key marked so may differ on the command line of `resume=`: it cannot change what the run computes
# (commands/resume.py: SAFE_ON_RESUME is read from these marks).
SAFE = {"safe_on_resume": True}


def _safe(default: Any, **kw: Any) -> Any:
    return field(default=default, metadata={**SAFE, **kw})


def _range(lo: float, hi: float, default: Any) -> Any:
    return field(default=default, metadata={"min": lo, "max": hi})


class Source(str, enum.Enum):
    """Where prepare takes images from."""

    local = "local"  # a folder in GLDv2's extracted layout: images/a/b/c/<id>.jpg
    synthetic = "synthetic"  # the built-in generator writes that layout, then as local
    http = "http"  # each sampled row's train.csv `url`, fetched with aiohttp
    tar = "tar"  # the official images_000.tar ... images_499.tar shards (URL or local folder)
    folder = "folder"  # your own photos: root/<class>/**/<file>, a labels CSV, or unlabelled (sources/folder.py)


@dataclass
class SyntheticConfig:
    """source=synthetic: the built-in generator.  Its SyntheticSpec takes these defaults and ranges."""

    n_landmarks: int = _min(2, 20)
    n_images: int = _min(6, 1500)
    min_per_landmark: int = _min(1, 3)
    width: int = _range(32, 1024, 160)
    height: int = _range(32, 1024, 120)
    seed: int = _min(0, 0)


@dataclass
class HttpConfig:
    """source=http: the aiohttp downloader (also caps tar members and fetches a train.csv URL)."""

    concurrency: int = _min(1, 32)  # requests in flight in total
    per_host: int = _min(1, 8)  # requests in flight per host
    connect_timeout: float = _min(0.01, 10.0)  # seconds to open a connection
    read_timeout: float = _min(0.01, 30.0)  # seconds of silence while reading a response
    retries: int = _min(0, 4)  # extra tries on 429/5xx/timeouts/resets
    backoff_base: float = _min(0.0, 0.5)  # seconds; doubles each retry, with jitter
    backoff_max: float = _min(0.0, 30.0)  # cap on one wait (Retry-After is honoured up to this)
    max_bytes: int = _min(1024, 20_000_000)  # an image body over this is dropped as too_big
    max_redirects: int = _range(0, 20, 5)
    user_agent: str = "landmark-ae/0.1 (GLDv2 image retrieval research; https://github.com/landmark-ae)"


@dataclass
class TarConfig:
    """source=tar: images_NNN.tar shards plus md5.images_NNN.txt lists."""

    base: Optional[str] = None  # https://s3.amazonaws.com/google-landmark or a local folder
    shards: Optional[List[int]] = None  # shard indices to read; null = all 0..499
    retries: int = _min(0, 2)  # re-reads of a shard that fails its md5 or breaks off
    concurrency: int = _min(1, 2)  # shards streamed at once


@dataclass
class DataConfig:
    """The seed study's slicing of GLDv2 by default: landmark_id in [1000, 2000), 1% test (at least
    one image per landmark), the rest 80/20 train/val, stored at 96x96."""

    name: str = MISSING
    source: Source = Source.local
    root: Optional[str] = MISSING  # folder holding images/ (and train.csv unless csv is set)
    csv: Optional[str] = None  # GLDv2 train.csv (id,url,landmark_id); default <root>/train.csv
    landmark_min: int = 1000  # sampled landmark_id range [landmark_min, landmark_max)
    landmark_max: int = 2000
    test_fraction: float = _range(0.0, 0.5, 0.01)
    val_fraction: float = _range(0.0, 0.9, 0.2)
    image_size: int = _min(8, 96)  # stored side in pixels (the seed: 96x96)
    seed: int = 0  # of the split
    csv_chunksize: int = _min(1, 200_000)
    labels: str = "folders"  # (source=folder) where labels come from: folders | csv (data.csv: path,label) | none
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    tar: TarConfig = field(default_factory=TarConfig)


@dataclass
class ModelConfig:
    name: str = MISSING
    description: str = ""
    input_size: int = field(default=MISSING, metadata={"min": 8, "max": 4096})
    encoder: List[Dict[str, Any]] = MISSING
    decoder: List[Dict[str, Any]] = MISSING
    # Optional head on the embedding, trained by the contrastive objective only (SimCLR's projector; embeddings come before it)
    projector: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class PathsConfig:
    # conf/paths/default.yaml reads LANDMARK_AE_OUTPUTS (as common.default_output_dir does) when composed
    output_dir: str = field(default_factory=default_output_dir)


@dataclass
class PrepareConfig:
    data: DataConfig = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    resume: Optional[str] = _safe(None)  # an interrupted prepare run to finish in place (finished images are skipped)
    workers: int = _min(1, 2, **SAFE)  # threads decoding and resizing images (Pillow releases the GIL)
    jpeg_quality: int = _range(50, 100, 95)
    progress: bool = _safe(True)  # rich progress bars on stderr


class ObjectiveName(str, enum.Enum):
    """What the encoder sees; the decoder always rebuilds the clean image."""

    reconstruct = "reconstruct"  # the seed: the clean image itself
    denoise = "denoise"  # plus Gaussian noise
    augment = "augment"  # a random resized crop, flip and colour jitter of it
    masked = "masked"  # with random square patches greyed out
    # two augmented views per image: NT-Xent (SimCLR's loss) on the projector's output pulls the views of
    # one image together and the batch's other images away, plus the MSE of the decoder rebuilding each view
    contrastive = "contrastive"


class Logger(str, enum.Enum):
    """Where train logs its curves besides history.csv; `logger=null` on the command line is `none`."""

    none = "none"  # history.csv only
    tensorboard = "tensorboard"  # also <run dir>/tensorboard/


class LrSchedule(str, enum.Enum):
    constant = "constant"  # the seed: the optimizer's lr throughout
    onecycle = "onecycle"  # warm up to lr over the first 5% of steps, then anneal to ~0 (cosine)


@dataclass
class ObjectiveConfig:
    name: ObjectiveName = ObjectiveName.reconstruct
    noise_std: float = _range(0.0, 2.0, 0.2)  # denoise: in [-1, 1] model units
    crop_scale: float = _range(0.05, 1.0, 0.35)  # augment: smallest crop area fraction
    flip: bool = True  # augment: mirror half the crops
    jitter: float = _range(0.0, 0.9, 0.4)  # augment: brightness/contrast/saturation factor spread
    mask_ratio: float = _range(0.0, 0.95, 0.5)  # masked: share of patches hidden
    mask_patch: int = _min(1, 8)  # masked: patch side in pixels
    # > 0: two corrupted views per image; adds this weight times the cross-view disagreement of their
    # batch-standardised embeddings (1 - per-dimension correlation) to the reconstruction loss.
    invariance: float = _min(0.0, 0.0)
    # with invariance > 0: this weight times the mean squared off-diagonal cross-view correlation.
    redundancy: float = _min(0.0, 0.0)
    greyscale: float = _range(0.0, 1.0, 0.0)  # augment/contrastive: share of views turned grey
    temperature: float = _range(0.01, 10.0, 0.2)  # contrastive: NT-Xent softmax temperature
    reconstruction: float = _min(0.0, 1.0)  # contrastive: weight of the decoder's MSE
    # contrastive: the side views are cut from (null: the model's input size). 96 (the stored images) cuts
    # each crop at full resolution, then resamples it: a crop keeps the detail a downsized image has lost.
    source_size: Optional[int] = _min(8, None)
    # contrastive multi-crop (SwAV): this many extra small views per image, each local_size px and
    # covering [local_crop_scale, crop_scale] of the image, each pulled towards both global views.
    local_crops: int = _min(0, 0)
    local_size: int = _min(8, 24)
    local_crop_scale: float = _range(0.01, 1.0, 0.05)
    neighbours: float = _range(0.0, 1.0, 0.0)  # contrastive: weight w of NNCLR's loss (objectives.neighbour_nt_xent)


class Pooling(str, enum.Enum):
    flatten = "flatten"
    avg = "avg"
    max = "max"
    gem = "gem"


class Runtime(str, enum.Enum):
    """What runs the encoder (embed, query, serve): auto is onnx on the CPU where the embed run holds
    encoder.onnx (retrieval/onnx_encoder.py: no torch imported by query and serve), else torch."""

    auto = "auto"
    onnx = "onnx"
    torch = "torch"


class QuerySet(str, enum.Enum):
    test = "test"  # the protocol: test queries against train+val
    val = "val"  # for choosing settings: val queries against train (the test set stays unseen)
    # every image queries all the others (itself left out), clustering on all: e.g. a collection
    # embedded with a model trained on other landmarks (embed data_dir=<another prepare run>)
    all = "all"


@dataclass
class EmbedSettings:
    """How embed turns a model's latents into searchable rows; shared by EmbedConfig and by train's
    eval_embed (the settings a train run carries: a plain `embed train_run=<run>` applies them)."""

    # null, or the side in pixels images are resized to for the encoder, in place of the size it was
    # trained at (the checkpoint's model.input_size). Trained on random crops, a model sees objects
    # larger than a whole image shows them; a larger embed size matches that (FixRes). Needs an
    # encoder that takes any size (conv + pooling, as M5): a flattened conv latent changes length.
    input_size: Optional[int] = _min(8, None)
    # of a conv latent (C, H, W); for an encoder that pools itself (M5), avg/max/gem replace its own pooling
    pooling: Pooling = Pooling.flatten
    gem_p: float = _range(0.1, 100.0, 3.0)
    l2: bool = False  # unit-length rows
    # null, or the number of principal axes kept, each scaled to unit variance (L2 before and after when l2)
    pca_whiten: Optional[int] = _min(1, None)
    # pca_whiten: this share of the largest eigenvalue is added to every eigenvalue before scaling,
    # so weak axes are scaled up less (0.01-0.1: a softer whitening that keeps many axes usable)
    whiten_shrinkage: float = _range(0.0, 10.0, 1e-6)
    # Label-free re-ranking (need l2=true; 0 = off), stored with the run, applied by query/serve/evaluate.
    # DBA: each database row -> the sim^dba_alpha-weighted mean of itself and its dba_k nearest database
    # rows, L2. αQE: each query -> the same of itself and its qe_k first results, searched again.
    dba_k: int = _min(0, 0)
    dba_alpha: float = _range(0.0, 100.0, 3.0)
    qe_k: int = _min(0, 0)
    qe_alpha: float = _range(0.0, 100.0, 3.0)
    # Diffusion (retrieval/diffusion.py; needs l2=true; 0 = off): rows ranked by a random walk on the
    # database's mutual diffusion_k-NN graph, from each query's diffusion_query_k first results
    diffusion_k: int = _min(0, 0)
    diffusion_query_k: int = _min(1, 10)
    diffusion_alpha: float = _range(0.0, 0.999, 0.99)  # the walk's share of each step; 0: the plain search


class DistBackend(str, enum.Enum):
    auto = "auto"  # nccl on CUDA, gloo on CPU
    nccl = "nccl"
    gloo = "gloo"


class Amp(str, enum.Enum):
    none = "none"  # float32 throughout (the CPU default, and what every measured CPU result used)
    bf16 = "bf16"  # autocast to bfloat16 (CUDA, or CPUs with bf16 support)
    fp16 = "fp16"  # autocast to float16 with a GradScaler (CUDA only)


@dataclass
class DistConfig:
    """Training under `torchrun --nproc-per-node=N -m landmark_ae train ...` (train/distributed.py)."""

    backend: DistBackend = DistBackend.auto


@dataclass
class TrainConfig:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    data_dir: Optional[str] = None  # the prepared dataset (a prepare run dir); null: the latest complete one of data.name
    resume: Optional[str] = _safe(None)  # an interrupted train run to continue from its last.pt
    # more (constant schedule) or as many on resume; the loop refuses what a schedule cannot do
    epochs: int = _min(1, 20, **SAFE)
    batch_size: int = _min(1, 64)
    device: str = _safe("auto")  # auto picks cuda, then mps, then cpu
    seed: int = 42
    threads: int = _min(0, 0, **SAFE)  # torch intra-op threads; 0 = torch's default
    # The seed study: Adam with default parameters (any torch optimizer via _target_).
    optimizer: Dict[str, Any] = field(default_factory=lambda: {"_target_": "torch.optim.Adam", "lr": 0.001})
    lr_schedule: LrSchedule = LrSchedule.constant
    # Conv weights and activations channels-last (NHWC): faster CPU convolutions for small models
    # such as M5; results differ from the default layout in the last float bits only.
    channels_last: bool = False
    # The GPU path, all off by default (the CPU path is unchanged by them): mixed precision, and
    # torch.compile of the training step's model. Pinned memory and non-blocking copies come with CUDA.
    amp: Amp = Amp.none
    compile: bool = False
    # Under torchrun: BatchNorm layers become SyncBatchNorm (statistics of the global batch; CUDA only).
    sync_bn: bool = False
    dist: DistConfig = field(default_factory=DistConfig)
    recon_images: int = _min(1, 8, **SAFE)  # images shown in reconstructions.png
    # null/none (history.csv only) or tensorboard (also <run dir>/tensorboard/): validate() makes it a Logger
    logger: Any = _safe(None, choices=Logger, null=Logger.none)
    progress: bool = _safe(True)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    # After the last epoch, score this run in the same job (landmark_ae/chain.py): `landmark-ae embed
    # <eval_embed>` then `landmark-ae evaluate queries=<eval_queries>`, as ordinary runs; metrics.json
    # and run.json here record the scores and both runs, stdout adds eval.<metric> lines, and a sweep's
    # job returns eval.map@100 (the objective of hydra/sweeper=optuna).
    evaluate: bool = False
    eval_queries: QuerySet = QuerySet.val  # val queries vs train: the test set stays unseen unless asked
    # How that evaluation embeds the run (embed's keys of the same names), e.g. eval_embed.l2=true
    eval_embed: EmbedSettings = field(default_factory=EmbedSettings)


class IndexKind(str, enum.Enum):
    exact = "exact"  # numpy, exact: the oracle, and fast enough for small databases
    flat = "flat"  # FAISS exact (IndexFlat)
    ivf = "ivf"  # FAISS IVF-Flat: nlist cells, nprobe searched
    hnsw = "hnsw"  # FAISS HNSW graph: M links, efSearch


@dataclass
class IndexConfig:
    """How `embed` indexes its database rows for query/evaluate/serve (conf/index/*.yaml)."""

    name: IndexKind = IndexKind.exact
    nlist: int = _min(1, 1024)  # ivf: cells (clamped to the database size)
    nprobe: int = _min(1, 16)  # ivf: cells searched per query
    M: int = _min(2, 32)  # hnsw: links per node
    efConstruction: int = _min(1, 80)  # hnsw: build-time candidate list
    efSearch: int = _min(1, 128)  # hnsw: search-time candidate list
    seed: int = 0


class KMeansBackend(str, enum.Enum):
    sklearn = "sklearn"  # scikit-learn KMeans (n_init restarts)
    faiss = "faiss"  # FAISS k-means (nredo = n_init), much faster at GLDv2 scale


@dataclass
class EmbedConfig(EmbedSettings):
    """Post-processing (EmbedSettings) is fitted on the database (train+val) rows only, stored as transform.npz and
    applied by `query` too."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    train_run: Optional[str] = None  # a train run dir (its best.pt); null: the most recent complete one
    resume: Optional[str] = _safe(None)  # an interrupted embed run to redo in place, with the checkpoint it started with
    # What to embed (at most one; null: the train run's own prepared dataset). data_dir: another
    # prepare run (labelled, its splits kept); images: any folder (recursively) or a text file of
    # paths, embedded as one unlabelled database.
    data_dir: Optional[str] = None
    images: Optional[str] = None
    batch_size: int = _min(1, 256, **SAFE)
    device: str = _safe("auto")
    progress: bool = _safe(True)
    index: IndexConfig = field(default_factory=IndexConfig)
    # encoder.onnx written and checked against torch (retrieval/onnx_export.py); LANDMARK_AE_ONNX=false
    # turns it off by default (the test suite does: the export costs seconds per embed)
    onnx: bool = "${oc.env:LANDMARK_AE_ONNX,true}"  # type: ignore[assignment]
    runtime: Runtime = _safe(Runtime.auto)  # auto: the faster on the check images; onnx needs onnx=true


@dataclass
class EvaluateConfig:
    paths: PathsConfig = field(default_factory=PathsConfig)
    embed_run: Optional[str] = None  # an embed run dir; null: the most recent complete one
    seed: int = 0  # k-means on the train embeddings, k = number of landmarks in train
    n_init: int = _min(1, 10)
    # k-means runs (seeds seed, seed+1, ...): NMI/RI/ARI/AMI are their mean ± std. One run is one draw
    # of a local optimum, so a single figure hides how much the seed moves it; 5 runs show that spread
    # for 5x the clustering time only (retrieval is unaffected). 1: the old single run, exactly.
    kmeans_seeds: int = _min(1, 5)
    k: int = _min(1, 100)  # retrieval depth (mAP@k, recall@k)
    pixel_baseline: bool = True  # also score raw pixels, downsampled to about the embedding's dimension
    # sklearn stays the default with kmeans_seeds > 1: FAISS was no faster at 8000 x 192, k = 10 on
    # 2 cores (about 4 s a run each); it wins at large k (docs/scale.md)
    kmeans: KMeansBackend = KMeansBackend.sklearn
    queries: QuerySet = QuerySet.test


class OutputFormat(str, enum.Enum):
    tsv = "tsv"
    json = "json"
    jsonl = "jsonl"  # one JSON object per query per line, written as each batch is answered
    table = "table"


@dataclass
class QueryConfig:
    paths: PathsConfig = field(default_factory=PathsConfig)
    image: Any = MISSING  # a path, a list of paths, a folder, or - (paths from stdin, one per line)
    k: int = _min(1, 10)
    embed_run: Optional[str] = None  # an embed run dir; null: the most recent complete one
    checkpoint: Optional[str] = None  # the checkpoint to embed queries with; null: the embed run's own
    # tsv (rank, distance, id, landmark_id, path, query), jsonl, json or table
    format: OutputFormat = OutputFormat.tsv
    save_grid: bool = False  # write retrieval_grid.png (each query and its top k) into the run dir
    device: str = "cpu"  # a single query is fastest on the CPU (no device start-up)
    batch_size: int = _min(1, 64)
    runtime: Runtime = Runtime.auto  # auto: encoder.onnx on the CPU where the embed run has it, else torch


class RunsFormat(str, enum.Enum):
    tsv = "tsv"
    table = "table"
    json = "json"
    csv = "csv"


@dataclass
class RunsConfig:
    """`landmark-ae runs`: list runs with their status, settings and results."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    command: Optional[str] = None  # prepare, train, embed, evaluate, query, serve, export; null: all
    sweep: Optional[str] = None  # a multirun sweep dir: only its jobs
    format: RunsFormat = RunsFormat.tsv
    sort: Optional[str] = None  # a column: metrics best first, best_val_loss lowest first, else ascending
    plot: bool = False  # write <sweep>/sweep.png (needs sweep=) and print its path instead of the table


@dataclass
class ServeConfig:
    """`landmark-ae serve`: one aiohttp process answering queries against one embed run."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    embed_run: Optional[str] = None  # an embed run dir; null: the most recent complete one
    checkpoint: Optional[str] = None  # the checkpoint to embed queries with; null: the embed run's own
    host: str = "127.0.0.1"  # anything but a loopback address needs a token
    port: int = _range(0, 65535, 8080)  # 0: a free port (the url line on stdout says which)
    token: Optional[str] = None  # every request must carry `Authorization: Bearer <token>`; or LANDMARK_AE_TOKEN
    k: int = _min(1, 10)  # neighbours when a request does not say ?k=
    max_k: int = _min(1, 1000)
    max_batch: int = _min(1, 32)  # queries embedded in one forward pass
    max_wait_ms: float = _range(0.0, 1000.0, 5.0)  # how long the first waiting query waits for others
    max_queue: int = _min(1, 256)  # waiting queries beyond this are answered 503
    max_body_mb: float = _min(0.001, 20.0)  # larger bodies are answered 413 (counted while read, multipart too)
    max_inflight_mb: float = _min(0.001, 256.0)  # bytes all requests hold at once; beyond: 503 + Retry-After
    max_pixels: int = _range(1, 64_000_000, 40_000_000)  # larger images: 400, from the header, before decoding
    timeout_s: float = _min(0.1, 30.0)  # a request not answered within this (read, decode, search) is 503
    drain_s: float = _min(0.0, 30.0)  # on SIGTERM/SIGINT: how long requests in flight get to finish
    device: str = "cpu"
    threads: int = _min(0, 0)  # torch's (or ONNX Runtime's) intra-op threads; 0 = its default
    batch_size: int = _min(1, 64)
    runtime: Runtime = Runtime.auto  # auto: encoder.onnx on the CPU where the embed run has it, else torch


class ExportFormat(str, enum.Enum):
    parquet = "parquet"  # embeddings.parquet: id, path, label, class_name, vector (pandas, pyarrow, duckdb)
    npy = "npy"  # embeddings.npy and index.csv as the embed run holds them


@dataclass
class ExportConfig:
    """`landmark-ae export`: an embed run as a bundle that needs neither torch nor this package."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    embed_run: Optional[str] = None  # an embed run dir; null: the most recent complete one
    out: Optional[str] = None  # the bundle's folder (new or empty); null: the export run dir itself
    format: ExportFormat = ExportFormat.parquet


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="prepare_schema", node=PrepareConfig)
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="embed_schema", node=EmbedConfig)
    cs.store(name="evaluate_schema", node=EvaluateConfig)
    cs.store(name="query_schema", node=QueryConfig)
    cs.store(name="serve_schema", node=ServeConfig)
    cs.store(name="export_schema", node=ExportConfig)
    cs.store(name="runs_schema", node=RunsConfig)
    # Under schema/, not data/ or model/: a schema is not an option a user can pick (data=...).
    cs.store(group="schema", name="data", node=DataConfig)
    cs.store(group="schema", name="model", node=ModelConfig)
    cs.store(group="schema", name="index", node=IndexConfig)


def __getattr__(name: str) -> Any:
    """validate() and the rules across keys live in config_checks (they need every schema above);
    `from landmark_ae.config import validate` keeps working."""
    if name in ("validate", "check_reranking", "safe_on_resume", "CROSS_CHECKS"):
        from landmark_ae import config_checks

        return getattr(config_checks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
