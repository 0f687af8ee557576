"""Training recipes: one YAML per paper-table row (package data) plus profiles, loaded into typed dataclasses.

See :mod:`hrnet_core.recipes.config` for the schema and loading rules.
"""

from .config import (
    ConfigError,
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    PaperRef,
    Recipe,
    ScheduleConfig,
    TrainConfig,
    check_zoo_model,
    flatten,
    list_extra_recipes,
    list_profiles,
    list_recipes,
    load_recipe,
    parse_overrides,
    recipe_from_dict,
)

__all__ = [
    "ConfigError", "DataConfig", "ModelConfig", "OptimizerConfig", "PaperRef",
    "Recipe", "ScheduleConfig", "TrainConfig", "check_zoo_model", "flatten", "list_extra_recipes", "list_profiles", "list_recipes",
    "load_recipe", "parse_overrides", "recipe_from_dict",
]
