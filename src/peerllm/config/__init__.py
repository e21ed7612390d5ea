"""Frozen, validated node configuration, and the loaders that build it from YAML, env and flags.

Layers, lowest to highest priority: defaults < config file < environment < CLI flags.
Each layer is a nested mapping shaped like the YAML file; ``load_config`` merges them
and validates the result once::

    cfg = load_config(path, environ=os.environ, flags=flags)
    # = config_from_mapping(merge_layers(load_yaml_config(path), config_from_env(env), flags))

Every section (``node``, ``p2p``, ``discovery``, ``api``, ``models``, ``scheduling``,
``inference``, ``audit``) is a frozen dataclass that checks itself with the one set of
checks in ``validate``. Every check raises ConfigError whose ``key`` is the dotted
setting name (``inference.max_queue``), or the environment variable's name for values
that came from one. Nothing in here reads ``os.environ``: the environment is a parameter.

Modules: ``validate`` (value checks), ``sections``, ``inference`` and ``audit`` (the
sections), ``node`` (NodeConfig, building it from a mapping), ``layers`` (YAML files,
merging), ``env`` (the variable table and its parsers), ``load`` (all layers in one call).
"""

from .audit import AuditConfig as AuditConfig
from .auth import ISSUER_ID_PATTERN as ISSUER_ID_PATTERN
from .auth import AuthConfig as AuthConfig
from .env import ENV_VARS as ENV_VARS
from .env import EnvVar as EnvVar
from .env import config_from_env as config_from_env
from .env import parse_api_address as parse_api_address
from .inference import EVICTION_POLICIES as EVICTION_POLICIES
from .inference import EvictionPolicy as EvictionPolicy
from .inference import InferenceConfig as InferenceConfig
from .layers import load_yaml_config as load_yaml_config
from .layers import merge_layers as merge_layers
from .layers import put_dotted as put_dotted
from .load import load_config as load_config
from .node import ALL_KEYS as ALL_KEYS
from .node import LOG_LEVELS as LOG_LEVELS
from .node import SECTIONS as SECTIONS
from .node import NodeConfig as NodeConfig
from .node import config_from_mapping as config_from_mapping
from .sections import DEFAULT_API_HOST as DEFAULT_API_HOST
from .sections import DEFAULT_API_PORT as DEFAULT_API_PORT
from .sections import MAX_RECORD_TTL_S as MAX_RECORD_TTL_S
from .sections import STRATEGIES as STRATEGIES
from .sections import ApiConfig as ApiConfig
from .sections import DiscoveryConfig as DiscoveryConfig
from .sections import ModelsConfig as ModelsConfig
from .sections import NodeIdentityConfig as NodeIdentityConfig
from .sections import P2PConfig as P2PConfig
from .sections import SchedulingSettings as SchedulingSettings
from .validate import DEFAULT_P2P_PORT as DEFAULT_P2P_PORT

__all__ = [
    "ALL_KEYS",
    "DEFAULT_API_HOST",
    "DEFAULT_API_PORT",
    "DEFAULT_P2P_PORT",
    "ENV_VARS",
    "EVICTION_POLICIES",
    "ISSUER_ID_PATTERN",
    "LOG_LEVELS",
    "MAX_RECORD_TTL_S",
    "SECTIONS",
    "STRATEGIES",
    "ApiConfig",
    "AuditConfig",
    "AuthConfig",
    "DiscoveryConfig",
    "EnvVar",
    "EvictionPolicy",
    "InferenceConfig",
    "ModelsConfig",
    "NodeConfig",
    "NodeIdentityConfig",
    "P2PConfig",
    "SchedulingSettings",
    "config_from_env",
    "config_from_mapping",
    "load_config",
    "load_yaml_config",
    "merge_layers",
    "parse_api_address",
    "put_dotted",
]
