from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    ALLOW: _ClassVar[Verdict]
    DENY: _ClassVar[Verdict]
    APPROVAL_REQUIRED: _ClassVar[Verdict]

class ApprovalState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    APPROVAL_STATE_UNSPECIFIED: _ClassVar[ApprovalState]
    PENDING: _ClassVar[ApprovalState]
    APPROVED: _ClassVar[ApprovalState]
    REJECTED: _ClassVar[ApprovalState]
    EXPIRED: _ClassVar[ApprovalState]
    CONSUMED: _ClassVar[ApprovalState]
VERDICT_UNSPECIFIED: Verdict
ALLOW: Verdict
DENY: Verdict
APPROVAL_REQUIRED: Verdict
APPROVAL_STATE_UNSPECIFIED: ApprovalState
PENDING: ApprovalState
APPROVED: ApprovalState
REJECTED: ApprovalState
EXPIRED: ApprovalState
CONSUMED: ApprovalState

class EnrollRequest(_message.Message):
    __slots__ = ("identity",)
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    identity: str
    def __init__(self, identity: _Optional[str] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("identity", "cgroup", "cgroup_id", "policy_version", "keep_capabilities", "unscoped", "keep_inherited_sockets", "read_only_root", "writable", "protected_paths", "hidden_paths", "exposed_links")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    CGROUP_FIELD_NUMBER: _ClassVar[int]
    CGROUP_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    KEEP_CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    UNSCOPED_FIELD_NUMBER: _ClassVar[int]
    KEEP_INHERITED_SOCKETS_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_ROOT_FIELD_NUMBER: _ClassVar[int]
    WRITABLE_FIELD_NUMBER: _ClassVar[int]
    PROTECTED_PATHS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_PATHS_FIELD_NUMBER: _ClassVar[int]
    EXPOSED_LINKS_FIELD_NUMBER: _ClassVar[int]
    identity: str
    cgroup: str
    cgroup_id: int
    policy_version: str
    keep_capabilities: _containers.RepeatedScalarFieldContainer[str]
    unscoped: bool
    keep_inherited_sockets: bool
    read_only_root: bool
    writable: _containers.RepeatedScalarFieldContainer[str]
    protected_paths: _containers.RepeatedScalarFieldContainer[str]
    hidden_paths: _containers.RepeatedScalarFieldContainer[str]
    exposed_links: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, identity: _Optional[str] = ..., cgroup: _Optional[str] = ..., cgroup_id: _Optional[int] = ..., policy_version: _Optional[str] = ..., keep_capabilities: _Optional[_Iterable[str]] = ..., unscoped: _Optional[bool] = ..., keep_inherited_sockets: _Optional[bool] = ..., read_only_root: _Optional[bool] = ..., writable: _Optional[_Iterable[str]] = ..., protected_paths: _Optional[_Iterable[str]] = ..., hidden_paths: _Optional[_Iterable[str]] = ..., exposed_links: _Optional[_Iterable[str]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("daemon_version", "policy_version", "policy_generation", "identities", "events_lost", "events_written", "bpffs", "attach_cgroup", "last_reload_error", "health")
    DAEMON_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_GENERATION_FIELD_NUMBER: _ClassVar[int]
    IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    EVENTS_LOST_FIELD_NUMBER: _ClassVar[int]
    EVENTS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    BPFFS_FIELD_NUMBER: _ClassVar[int]
    ATTACH_CGROUP_FIELD_NUMBER: _ClassVar[int]
    LAST_RELOAD_ERROR_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    daemon_version: str
    policy_version: str
    policy_generation: int
    identities: _containers.RepeatedCompositeFieldContainer[IdentityStatus]
    events_lost: int
    events_written: int
    bpffs: str
    attach_cgroup: str
    last_reload_error: str
    health: DaemonHealth
    def __init__(self, daemon_version: _Optional[str] = ..., policy_version: _Optional[str] = ..., policy_generation: _Optional[int] = ..., identities: _Optional[_Iterable[_Union[IdentityStatus, _Mapping]]] = ..., events_lost: _Optional[int] = ..., events_written: _Optional[int] = ..., bpffs: _Optional[str] = ..., attach_cgroup: _Optional[str] = ..., last_reload_error: _Optional[str] = ..., health: _Optional[_Union[DaemonHealth, _Mapping]] = ...) -> None: ...

class IdentityStatus(_message.Message):
    __slots__ = ("id", "mode", "killed", "cgroups", "allowed", "denied", "audited", "index")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    KILLED_FIELD_NUMBER: _ClassVar[int]
    CGROUPS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    DENIED_FIELD_NUMBER: _ClassVar[int]
    AUDITED_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    id: str
    mode: str
    killed: bool
    cgroups: int
    allowed: int
    denied: int
    audited: int
    index: int
    def __init__(self, id: _Optional[str] = ..., mode: _Optional[str] = ..., killed: _Optional[bool] = ..., cgroups: _Optional[int] = ..., allowed: _Optional[int] = ..., denied: _Optional[int] = ..., audited: _Optional[int] = ..., index: _Optional[int] = ...) -> None: ...

class RevokeRequest(_message.Message):
    __slots__ = ("identity", "reason")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    identity: str
    reason: str
    def __init__(self, identity: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RestoreRequest(_message.Message):
    __slots__ = ("identity", "reason")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    identity: str
    reason: str
    def __init__(self, identity: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RestoreResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadPolicyResponse(_message.Message):
    __slots__ = ("policy_version", "policy_generation", "warnings")
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_GENERATION_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    policy_version: str
    policy_generation: int
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, policy_version: _Optional[str] = ..., policy_generation: _Optional[int] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class DaemonHealth(_message.Message):
    __slots__ = ("packet_guard", "warnings", "metrics_address", "audit_file", "audit_seq", "audit_head_hash", "audit_queue_dropped", "audit_trail_lost", "sinks", "last_reload_unix", "api_tcp_address", "guard_repairs", "guard_last_repair")
    PACKET_GUARD_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    METRICS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FILE_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SEQ_FIELD_NUMBER: _ClassVar[int]
    AUDIT_HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    AUDIT_QUEUE_DROPPED_FIELD_NUMBER: _ClassVar[int]
    AUDIT_TRAIL_LOST_FIELD_NUMBER: _ClassVar[int]
    SINKS_FIELD_NUMBER: _ClassVar[int]
    LAST_RELOAD_UNIX_FIELD_NUMBER: _ClassVar[int]
    API_TCP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    GUARD_REPAIRS_FIELD_NUMBER: _ClassVar[int]
    GUARD_LAST_REPAIR_FIELD_NUMBER: _ClassVar[int]
    packet_guard: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    metrics_address: str
    audit_file: str
    audit_seq: int
    audit_head_hash: str
    audit_queue_dropped: int
    audit_trail_lost: int
    sinks: _containers.RepeatedCompositeFieldContainer[SinkStatus]
    last_reload_unix: int
    api_tcp_address: str
    guard_repairs: int
    guard_last_repair: str
    def __init__(self, packet_guard: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ..., metrics_address: _Optional[str] = ..., audit_file: _Optional[str] = ..., audit_seq: _Optional[int] = ..., audit_head_hash: _Optional[str] = ..., audit_queue_dropped: _Optional[int] = ..., audit_trail_lost: _Optional[int] = ..., sinks: _Optional[_Iterable[_Union[SinkStatus, _Mapping]]] = ..., last_reload_unix: _Optional[int] = ..., api_tcp_address: _Optional[str] = ..., guard_repairs: _Optional[int] = ..., guard_last_repair: _Optional[str] = ...) -> None: ...

class SinkStatus(_message.Message):
    __slots__ = ("name", "endpoint", "up", "delivered", "backlog", "errors", "lost", "last_error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    endpoint: str
    up: bool
    delivered: int
    backlog: int
    errors: int
    lost: int
    last_error: str
    def __init__(self, name: _Optional[str] = ..., endpoint: _Optional[str] = ..., up: _Optional[bool] = ..., delivered: _Optional[int] = ..., backlog: _Optional[int] = ..., errors: _Optional[int] = ..., lost: _Optional[int] = ..., last_error: _Optional[str] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("identities", "kinds", "verdicts")
    IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    identities: _containers.RepeatedScalarFieldContainer[str]
    kinds: _containers.RepeatedScalarFieldContainer[str]
    verdicts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, identities: _Optional[_Iterable[str]] = ..., kinds: _Optional[_Iterable[str]] = ..., verdicts: _Optional[_Iterable[str]] = ...) -> None: ...

class AuditEventMessage(_message.Message):
    __slots__ = ("json", "seq", "time", "kind", "identity", "verdict", "reason", "policy_version")
    JSON_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    json: str
    seq: int
    time: str
    kind: str
    identity: str
    verdict: str
    reason: str
    policy_version: str
    def __init__(self, json: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[str] = ..., kind: _Optional[str] = ..., identity: _Optional[str] = ..., verdict: _Optional[str] = ..., reason: _Optional[str] = ..., policy_version: _Optional[str] = ...) -> None: ...

class IssueTokenRequest(_message.Message):
    __slots__ = ("ttl_seconds",)
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ttl_seconds: int
    def __init__(self, ttl_seconds: _Optional[int] = ...) -> None: ...

class IssueTokenResponse(_message.Message):
    __slots__ = ("token", "identity", "expires_at", "kid")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    KID_FIELD_NUMBER: _ClassVar[int]
    token: str
    identity: str
    expires_at: int
    kid: str
    def __init__(self, token: _Optional[str] = ..., identity: _Optional[str] = ..., expires_at: _Optional[int] = ..., kid: _Optional[str] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("token", "agent", "tool", "action", "resource", "params", "context", "override_token")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    agent: str
    tool: str
    action: str
    resource: str
    params: _struct_pb2.Struct
    context: _struct_pb2.Struct
    override_token: str
    def __init__(self, token: _Optional[str] = ..., agent: _Optional[str] = ..., tool: _Optional[str] = ..., action: _Optional[str] = ..., resource: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., override_token: _Optional[str] = ...) -> None: ...

class Obligation(_message.Message):
    __slots__ = ("budget", "remaining", "limit", "window", "unit")
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    budget: str
    remaining: float
    limit: float
    window: str
    unit: str
    def __init__(self, budget: _Optional[str] = ..., remaining: _Optional[float] = ..., limit: _Optional[float] = ..., window: _Optional[str] = ..., unit: _Optional[str] = ...) -> None: ...

class DecideResponse(_message.Message):
    __slots__ = ("verdict", "reason", "message", "matched_rules", "policy_version", "decision_id", "obligations", "approval_id", "elevation")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MATCHED_RULES_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    OBLIGATIONS_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    ELEVATION_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    reason: str
    message: str
    matched_rules: _containers.RepeatedScalarFieldContainer[str]
    policy_version: str
    decision_id: str
    obligations: _containers.RepeatedCompositeFieldContainer[Obligation]
    approval_id: str
    elevation: str
    def __init__(self, verdict: _Optional[_Union[Verdict, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., matched_rules: _Optional[_Iterable[str]] = ..., policy_version: _Optional[str] = ..., decision_id: _Optional[str] = ..., obligations: _Optional[_Iterable[_Union[Obligation, _Mapping]]] = ..., approval_id: _Optional[str] = ..., elevation: _Optional[str] = ...) -> None: ...

class Approval(_message.Message):
    __slots__ = ("id", "state", "identity", "kind", "tool", "action", "resource", "params_digest", "policy_version", "matched_rules", "created_at", "expires_at", "approver", "reason", "override_token", "destination", "ports", "ttl_seconds", "digest")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    MATCHED_RULES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    APPROVER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: ApprovalState
    identity: str
    kind: str
    tool: str
    action: str
    resource: str
    params_digest: str
    policy_version: str
    matched_rules: _containers.RepeatedScalarFieldContainer[str]
    created_at: int
    expires_at: int
    approver: str
    reason: str
    override_token: str
    destination: str
    ports: _containers.RepeatedScalarFieldContainer[int]
    ttl_seconds: int
    digest: str
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[ApprovalState, str]] = ..., identity: _Optional[str] = ..., kind: _Optional[str] = ..., tool: _Optional[str] = ..., action: _Optional[str] = ..., resource: _Optional[str] = ..., params_digest: _Optional[str] = ..., policy_version: _Optional[str] = ..., matched_rules: _Optional[_Iterable[str]] = ..., created_at: _Optional[int] = ..., expires_at: _Optional[int] = ..., approver: _Optional[str] = ..., reason: _Optional[str] = ..., override_token: _Optional[str] = ..., destination: _Optional[str] = ..., ports: _Optional[_Iterable[int]] = ..., ttl_seconds: _Optional[int] = ..., digest: _Optional[str] = ...) -> None: ...

class ApplySignedApprovalRequest(_message.Message):
    __slots__ = ("signed",)
    SIGNED_FIELD_NUMBER: _ClassVar[int]
    signed: str
    def __init__(self, signed: _Optional[str] = ...) -> None: ...

class GetApprovalRequest(_message.Message):
    __slots__ = ("id", "token")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    token: str
    def __init__(self, id: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class ListApprovalsRequest(_message.Message):
    __slots__ = ("all",)
    ALL_FIELD_NUMBER: _ClassVar[int]
    all: bool
    def __init__(self, all: _Optional[bool] = ...) -> None: ...

class ListApprovalsResponse(_message.Message):
    __slots__ = ("approvals",)
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    approvals: _containers.RepeatedCompositeFieldContainer[Approval]
    def __init__(self, approvals: _Optional[_Iterable[_Union[Approval, _Mapping]]] = ...) -> None: ...

class ResolveApprovalRequest(_message.Message):
    __slots__ = ("id", "approve", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    APPROVE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    approve: bool
    reason: str
    def __init__(self, id: _Optional[str] = ..., approve: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class RequestEgressRequest(_message.Message):
    __slots__ = ("destination", "ports", "protocol", "ttl_seconds", "reason", "token")
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    destination: str
    ports: _containers.RepeatedScalarFieldContainer[int]
    protocol: str
    ttl_seconds: int
    reason: str
    token: str
    def __init__(self, destination: _Optional[str] = ..., ports: _Optional[_Iterable[int]] = ..., protocol: _Optional[str] = ..., ttl_seconds: _Optional[int] = ..., reason: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class RequestEgressResponse(_message.Message):
    __slots__ = ("granted", "expires_at", "approval_id", "rule")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    expires_at: int
    approval_id: str
    rule: str
    def __init__(self, granted: _Optional[bool] = ..., expires_at: _Optional[int] = ..., approval_id: _Optional[str] = ..., rule: _Optional[str] = ...) -> None: ...

class PushPolicyRequest(_message.Message):
    __slots__ = ("files",)
    class FilesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FILES_FIELD_NUMBER: _ClassVar[int]
    files: _containers.ScalarMap[str, str]
    def __init__(self, files: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ElevateRequest(_message.Message):
    __slots__ = ("identity", "role", "ttl_seconds", "reason")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    identity: str
    role: str
    ttl_seconds: int
    reason: str
    def __init__(self, identity: _Optional[str] = ..., role: _Optional[str] = ..., ttl_seconds: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class EndElevationRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListElevationsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListElevationsResponse(_message.Message):
    __slots__ = ("elevations",)
    ELEVATIONS_FIELD_NUMBER: _ClassVar[int]
    elevations: _containers.RepeatedCompositeFieldContainer[Elevation]
    def __init__(self, elevations: _Optional[_Iterable[_Union[Elevation, _Mapping]]] = ...) -> None: ...

class Elevation(_message.Message):
    __slots__ = ("id", "identity", "role", "reason", "granted_by", "started_at", "expires_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    GRANTED_BY_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    identity: str
    role: str
    reason: str
    granted_by: str
    started_at: int
    expires_at: int
    def __init__(self, id: _Optional[str] = ..., identity: _Optional[str] = ..., role: _Optional[str] = ..., reason: _Optional[str] = ..., granted_by: _Optional[str] = ..., started_at: _Optional[int] = ..., expires_at: _Optional[int] = ...) -> None: ...
