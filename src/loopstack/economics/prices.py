"""The GPU price table: an editable YAML file, validated into typed records.

A default table ships inside the package (``prices.yaml``); a team copies it,
types in its own quotes, and passes the path. Owning a card is priced as
capital spread over its depreciation life plus power, cooling and staff, so
it can be compared hour for hour with renting one.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from loopstack.core.errors import ConfigError, NotFoundError

HOURS_PER_YEAR = 8760.0
Pricing = Literal["on_demand", "spot", "reserved", "owned"]
PRICINGS: tuple[str, ...] = ("on_demand", "spot", "reserved", "owned")


class _Strict(BaseModel):
    # allow_inf_nan=False: `.inf` priced a job at inf and made any model fit a card of `memory_gb: .inf`;
    # strict: `true` (or "3") is not a number here, though it was read as 1.0 (3.0).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class CloudPrice(_Strict):
    """USD (or the table's currency) per GPU-hour when renting."""

    on_demand: float = Field(gt=0)
    spot: float | None = Field(default=None, gt=0)
    reserved: float | None = Field(default=None, gt=0)


class OwnedCost(_Strict):
    """What a bought GPU costs: capital, power and staff.

    Examples
    --------
    >>> card = OwnedCost(purchase=30000, power_w=700, pue=1.3, electricity=0.12,
    ...                  staff_per_year=1500, depreciation_years=4, residual_value=5000)
    >>> round(card.fixed_per_year(), 2), round(card.energy_per_hour(), 4)
    (7750.0, 0.1092)
    """

    purchase: float = Field(gt=0)
    power_w: float = Field(ge=0)
    pue: float = Field(default=1.3, ge=1)
    electricity: float = Field(default=0.12, ge=0)
    staff_per_year: float = Field(default=0.0, ge=0)
    depreciation_years: float = Field(default=4.0, gt=0)
    residual_value: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _residual_below_purchase(self) -> OwnedCost:
        if self.residual_value >= self.purchase:
            raise ValueError(f"residual_value {self.residual_value} must be below purchase {self.purchase}")
        return self

    def fixed_per_year(self) -> float:
        """Straight-line depreciation to the residual value, plus staff: paid whether used or not."""
        return (self.purchase - self.residual_value) / self.depreciation_years + self.staff_per_year

    def energy_per_hour(self) -> float:
        """Electricity of one busy hour, cooling included: kW * PUE * price per kWh."""
        return self.power_w / 1000 * self.pue * self.electricity

    def hourly(self, utilization: float) -> float:
        """Cost of one used GPU-hour when the card is busy `utilization` of the year."""
        if not 0 < utilization <= 1:
            raise ConfigError(f"utilization={utilization!r} must be in (0, 1]")
        return self.fixed_per_year() / (HOURS_PER_YEAR * utilization) + self.energy_per_hour()


class GpuType(_Strict):
    """One GPU model: its memory, speed and prices."""

    name: str
    memory_gb: float = Field(gt=0)
    bf16_tflops: float = Field(gt=0)
    cloud: CloudPrice | None = None
    owned: OwnedCost | None = None

    def hourly(self, pricing: Pricing = "on_demand", utilization: float = 1.0) -> float:
        """Price of one GPU-hour under `pricing` (owned: at `utilization` of the year).

        Examples
        --------
        >>> gpu = PriceTable.load().gpu("H100-80GB")
        >>> gpu.hourly("on_demand")
        3.5
        """
        if pricing == "owned":
            if self.owned is None:
                raise ConfigError(f"GPU {self.name!r} has no 'owned' costs in the price table; add them or rent it")
            return self.owned.hourly(utilization)
        if pricing not in PRICINGS:
            raise ConfigError(f"pricing={pricing!r} must be one of {', '.join(PRICINGS)}")
        price = None if self.cloud is None else getattr(self.cloud, pricing)
        if price is None:
            raise ConfigError(f"GPU {self.name!r} has no cloud {pricing} price in the price table; add one")
        return float(price)

    def offers(self, pricing: str) -> bool:
        """Whether the table prices this GPU under `pricing`."""
        if pricing == "owned":
            return self.owned is not None
        return self.cloud is not None and getattr(self.cloud, pricing, None) is not None


class PriceTable(_Strict):
    """All GPU types of a price table, by name.

    Examples
    --------
    >>> table = PriceTable.load()
    >>> table.currency, "A100-80GB" in table.gpus
    ('USD', True)
    """

    currency: str = "USD"
    as_of: str = ""
    gpus: dict[str, GpuType]

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> PriceTable:
        """Read a YAML price table; the packaged default when `path` is None."""
        if path is None:
            text = resources.files("loopstack.economics").joinpath("prices.yaml").read_text()
            source = "the packaged prices.yaml"
        else:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                message = f"cannot read price table {path}: {exc.strerror}; pass an existing YAML file"
                raise ConfigError(message) from None
            except UnicodeDecodeError:
                raise ConfigError(f"price table {path} is not text; pass a YAML file like the packaged prices.yaml") \
                    from None
            source = str(path)
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"price table {source} is not valid YAML{where} ({getattr(exc, 'problem', exc)}); "
                              "fix the syntax") from None
        return cls.parse(data, source)

    @classmethod
    def parse(cls, data: Any, source: str = "price table") -> PriceTable:
        """Validate a mapping shaped like ``prices.yaml``."""
        if not isinstance(data, dict) or not isinstance(data.get("gpus"), dict):
            raise ConfigError(f"{source} must be a mapping with a 'gpus:' section; see the packaged prices.yaml")
        for name, spec in data["gpus"].items():
            if spec is not None and not isinstance(spec, dict):
                raise ConfigError(f"{source}: gpus.{name} must be a mapping with memory_gb, bf16_tflops and prices "
                                  f"(got {spec!r}); see the packaged prices.yaml")
        gpus = {name: {**(spec or {}), "name": name} for name, spec in data["gpus"].items()}
        try:
            return cls.model_validate({**data, "gpus": gpus})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{source}: {where}: {first['msg']} (got {first.get('input')!r})") from None

    def gpu(self, name: str) -> GpuType:
        """A GPU type by name (case-insensitive)."""
        for key, gpu in self.gpus.items():
            if key.lower() == name.lower():
                return gpu
        raise NotFoundError(f"GPU {name!r} is not in the price table; known: {', '.join(self.gpus)}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping.

    A copied GPU block whose name was not changed would otherwise replace the first one without a word.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if not isinstance(key, str | int | float | bool | None):
                continue  # SafeLoader itself names an unhashable key
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}; each GPU and field may appear once", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_default: list[PriceTable] = []


def default_prices() -> PriceTable:
    """The packaged price table, parsed once per process."""
    if not _default:
        _default.append(PriceTable.load())
    return _default[0]
