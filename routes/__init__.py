"""Config model, loader and route matcher of edgefn (see docs/routing.md)."""

from routes.config import Config, Route
from routes.errors import ConfigError, ConfigProblem
from routes.loader import load_config, parse_config, unknown_functions
from routes.patterns import Template
from routes.table import RouteMatch, RouteTable

__all__ = [
    "Config",
    "ConfigError",
    "ConfigProblem",
    "Route",
    "RouteMatch",
    "RouteTable",
    "Template",
    "load_config",
    "parse_config",
    "unknown_functions",
]
