"""Training recipes: one YAML per paper-table row (package data) plus profiles, loaded into typed dataclasses.

See :mod:`hrnet_core.recipes.config` for the schema and loading rules.
"""

from .config import (
    AugmentConfig,
    ConfigError,
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    PaperRef,
    Recipe,
    ScheduleConfig,
    TestConfig,
    TrainConfig,
    flatten,
    list_profiles,
    list_recipes,
    load_recipe,
    parse_overrides,
    recipe_from_dict,
)

__all__ = [
    "AugmentConfig", "ConfigError", "DataConfig", "LossConfig", "ModelConfig", "OptimizerConfig", "PaperRef",
    "Recipe", "ScheduleConfig", "TestConfig", "TrainConfig", "flatten", "list_profiles", "list_recipes",
    "load_recipe", "parse_overrides", "recipe_from_dict",
]
