"""Pydantic models of the HybridInference custom resource; they mirror crds/hybridinference.yaml.

The CRD's openAPIV3Schema is what the API server enforces; these models are what the operator parses.
Both must give the same verdict on every sample in tests/data/ (tests/operator/test_crd_parity.py),
including the CEL rules, which appear here as `model_validator`s carrying the same messages.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

# The workers' own choices (light modules, no torch): one list each for the CLI, the wire and the CRD.
from hybrid_workers.enums import Device, DType, Fallback, TransferMode
from hybrid_workers.enums import WireEncoding as Compression
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

GROUP = "hybridinference.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "HybridInference"
PLURAL = "hybridinferences"
# "<name>-prefill" must stay a DNS-1035 label (≤ 63 characters) for the Service of the same name.
MAX_NAME_LENGTH = 55
# DNS-1035 label: Service names must start with a letter (a HybridInference name alone may not).
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


class _Spec(BaseModel):
    """Base of every spec model: frozen, camelCase field names as in the CRD, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)


class PlacementMode(StrEnum):
    """`manual`: per-role nodeSelector; `auto`: the operator asks the planner."""

    MANUAL = "manual"
    AUTO = "auto"


class ModelVolume(_Spec):
    """Where model weights live: a PVC (shared or one per role), a hostPath (opt-in: not allowed under the
    restricted Pod Security Standard), or (none) a scratch emptyDir per pod (default model, download)."""

    pvc: str | None = Field(default=None, min_length=1, max_length=253)  # claim both roles mount
    prefill_pvc: str | None = Field(default=None, min_length=1, max_length=253)  # prefill's own claim
    decode_pvc: str | None = Field(default=None, min_length=1, max_length=253)  # decode's own claim
    host_path: str | None = Field(default=None, pattern=r"^/")  # absolute path on the node
    mount_path: str = Field(default="/models", pattern=r"^/")  # HF_HOME is <mount_path>/.huggingface
    read_only: bool = True  # mount read-only in the workers (only the download init container writes)

    @model_validator(mode="after")
    def _one_source(self) -> ModelVolume:
        claims = (self.pvc, self.prefill_pvc, self.decode_pvc)
        if self.host_path is not None and any(c is not None for c in claims):
            raise ValueError(
                "model.volume: set at most one of pvc and hostPath (prefillPvc and decodePvc count as pvc)"
            )
        return self

    def claim(self, role: str) -> str | None:
        """The PersistentVolumeClaim `role` mounts (its own, else the shared one), or None."""
        own = self.prefill_pvc if role == "prefill" else self.decode_pvc
        return own or self.pvc


class ModelDownload(_Spec):
    """An init container that fetches model.source from the Hugging Face Hub into the model volume."""

    enabled: bool = False
    revision: str | None = Field(default=None, min_length=1, max_length=255)  # default: main
    token_secret: str | None = Field(default=None, min_length=1, max_length=253)  # Secret key `token`


class ModelSpec(_Spec):
    """The model both roles load; they must load the same one (the KV fingerprint checks it)."""

    # HF id (from the HF cache in the volume; workers never download) or a path; None: the default model.
    source: str | None = Field(default=None, min_length=1, max_length=512)
    dtype: DType = DType.AUTO
    download: ModelDownload | None = None
    volume: ModelVolume = ModelVolume()

    @model_validator(mode="after")
    def _download_needs_hub_id(self) -> ModelSpec:
        if self.download and self.download.enabled and (not self.source or self.source.startswith("/")):
            raise ValueError("model.download needs model.source to be a Hugging Face id (not a path)")
        return self


class AgentFallback(StrEnum):
    """What serves decode while a native agent is lost (its Lease expired)."""

    NONE = "none"  # nothing: the resource is Degraded until the agent returns
    DEPLOYMENT = "deployment"  # the in-cluster decode Deployment, scaled to 0 while the agent serves


class AgentTarget(_Spec):
    """A native decode agent (`hybrid-inference agent`, e.g. on a Mac) that runs the decode role."""

    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)  # its Lease's name
    fallback: AgentFallback = AgentFallback.NONE
    # Folder (or HF id) of the model on the agent's machine; default: model.source as given.
    model_path: str | None = Field(default=None, min_length=1, max_length=1024)
    # Folder on the agent's machine with tls.crt, tls.key and ca.crt (TLS files never leave it).
    tls_dir: str = Field(default="/etc/hybrid-inference/tls", pattern=r"^(/|~)", max_length=1024)
    # HOST:PORT the agent dials for prefill; default: a prefill node's InternalIP and the NodePort.
    prefill_address: str | None = Field(default=None, pattern=r"^[^:/\s]+:[0-9]{1,5}$")


class Toleration(_Spec):
    """A Kubernetes toleration, as in a PodSpec."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class Resources(_Spec):
    """Container requests/limits (quantities as strings or integers, as in Kubernetes)."""

    requests: dict[str, str | int] = {}
    limits: dict[str, str | int] = {}


class PodTemplateMeta(_Spec):
    """Extra pod labels and annotations."""

    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class PodTemplate(_Spec):
    """Pod fields merged into a role's pods; pod_template.py checks and merges `spec` (a PodSpec subset)."""

    metadata: PodTemplateMeta = PodTemplateMeta()
    spec: dict[str, Any] = {}


class WorkerPoolSpec(_Spec):
    """One role's pods (prefill or decode): the same type serves both."""

    replicas: int = Field(default=1, ge=0, le=16)
    device: Device = Device.AUTO  # not mps: Metal is not reachable from Linux containers (the CRD's enum)
    gpus: int = Field(default=0, ge=0, le=8)  # nvidia.com/gpu per pod
    image: str | None = Field(default=None, min_length=1)  # default: the operator's image for the role
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    node_selector: dict[str, str] | None = None
    tolerations: tuple[Toleration, ...] = ()
    affinity: dict[str, Any] | None = None  # passed through to the PodSpec
    resources: Resources = Resources()
    runtime_class_name: str | None = Field(default=None, min_length=1)  # e.g. "nvidia" on k3s GPU nodes
    # Model loads of tens of GB take minutes: the Deployment's rollout deadline (Kubernetes' 600 s is short).
    progress_deadline_seconds: int = Field(default=1800, ge=60, le=86400)
    pod_template: PodTemplate | None = None
    agent: AgentTarget | None = None  # decode only: a native agent runs the role instead of pods

    @field_validator("device")
    @classmethod
    def _not_mps(cls, device: Device) -> Device:
        if device == Device.MPS:
            raise ValueError("mps: Metal is not reachable from containers; use auto, cpu or cuda")
        return device

    @model_validator(mode="after")
    def _gpus_need_gpu_device(self) -> WorkerPoolSpec:
        if self.device == Device.CPU and self.gpus > 0:
            raise ValueError("gpus > 0 needs device cuda or auto")
        return self


class CertManagerSpec(_Spec):
    """cert-manager issues the KV link's Secret: the operator renders a cert-manager.io/v1 Certificate."""

    issuer_name: str = Field(min_length=1, max_length=253)
    issuer_kind: Literal["Issuer", "ClusterIssuer"] = "Issuer"


class TLSSpec(_Spec):
    """TLS (or mutual TLS) on the KV transfer's gRPC connection; the Secret holds tls.crt, tls.key, ca.crt."""

    enabled: bool = False
    secret_name: str | None = Field(default=None, min_length=1, max_length=253)
    mutual: bool = False  # decode also presents a client certificate
    cert_manager: CertManagerSpec | None = None

    @model_validator(mode="after")
    def _enabled_needs_secret(self) -> TLSSpec:
        if self.enabled and not self.secret_name:
            raise ValueError(
                "kvTransfer.tls.enabled needs tls.secretName (a Secret with tls.crt, tls.key, ca.crt)"
            )
        return self


class KVTransferSpec(_Spec):
    """How KV caches are transferred from prefill to decode."""

    mode: TransferMode = TransferMode.LAYERWISE
    compression: Compression = Compression.NONE
    chunk_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024, le=16 * 1024 * 1024)
    tls: TLSSpec = TLSSpec()


class ServingSpec(_Spec):
    """The decode worker's OpenAI-compatible API."""

    port: int = Field(default=8000, ge=1024, le=65535)
    max_concurrency: int = Field(default=8, ge=1, le=1024)
    max_model_len: int | None = Field(default=None, ge=16, le=1048576)
    remote_prefill_min_tokens: int | Literal["auto"] = "auto"  # shorter prompts prefill locally
    fallback: Fallback = Fallback.LOCAL

    @model_validator(mode="after")
    def _min_tokens_not_negative(self) -> ServingSpec:
        if isinstance(self.remote_prefill_min_tokens, int) and self.remote_prefill_min_tokens < 0:
            raise ValueError("serving.remotePrefillMinTokens must be 'auto' or an integer ≥ 0")
        return self


class PlacementSpec(_Spec):
    """How nodes are chosen for the two roles."""

    mode: PlacementMode = PlacementMode.MANUAL
    # auto only: what the planner optimises for (unset: 10gbe, 4096-token prompts, 256 output tokens)
    link: str | None = Field(default=None, min_length=1, max_length=63)  # planner link id, e.g. 10gbe
    prompt_tokens: int | None = Field(default=None, ge=1, le=1048576)  # typical prompt length
    output_tokens: int | None = Field(default=None, ge=1, le=1048576)  # typical completion length


class MetricsSpec(_Spec):
    """Prometheus scraping."""

    service_monitor: bool = False  # render a monitoring.coreos.com/v1 ServiceMonitor
    port: int = Field(default=9090, ge=1024, le=65535)  # prefill worker's metrics port


class HybridInferenceSpec(_Spec):
    """spec of a HybridInference: one model served by prefill pods and decode pods."""

    model: ModelSpec = ModelSpec()
    prefill: WorkerPoolSpec = WorkerPoolSpec()
    decode: WorkerPoolSpec = WorkerPoolSpec()
    kv_transfer: KVTransferSpec = KVTransferSpec()
    serving: ServingSpec = ServingSpec()
    placement: PlacementSpec = PlacementSpec()
    metrics: MetricsSpec = MetricsSpec()

    @model_validator(mode="after")
    def _auto_has_no_selectors(self) -> HybridInferenceSpec:
        if self.placement.mode == PlacementMode.AUTO and (
            self.prefill.node_selector or self.decode.node_selector
        ):
            raise ValueError(
                "placement.mode auto chooses nodes itself: remove prefill.nodeSelector and "
                "decode.nodeSelector, or use placement.mode manual"
            )
        return self

    @model_validator(mode="after")
    def _agent_rules(self) -> HybridInferenceSpec:
        if self.prefill.agent is not None:
            raise ValueError("prefill.agent: agents run the decode role only; remove it")
        tls = self.kv_transfer.tls
        if self.decode.agent is not None and not (tls.enabled and tls.mutual):
            raise ValueError(
                "decode.agent: the KV link leaves the cluster network; set kvTransfer.tls.enabled "
                "and kvTransfer.tls.mutual (mTLS)"
            )
        return self


class ObjectMeta(BaseModel):
    """The parts of metadata the operator uses (the API server owns the rest)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NAME_PATTERN)
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None


class HybridInference(BaseModel):
    """A whole HybridInference object as read from the API (status is ignored when parsing)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    api_version: Literal["hybridinference.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["HybridInference"]
    metadata: ObjectMeta
    spec: HybridInferenceSpec

    @property
    def name(self) -> str:
        """metadata.name."""
        return self.metadata.name

    @property
    def namespace(self) -> str:
        """metadata.namespace ("default" when absent, as kubectl would)."""
        return self.metadata.namespace or "default"


def parse(body: dict[str, Any]) -> HybridInference:
    """Parse an object body; raises pydantic.ValidationError naming each bad field and value."""
    return HybridInference.model_validate(dict(body))
