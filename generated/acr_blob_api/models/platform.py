from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

T = TypeVar("T", bound="Platform")


@_attrs_define
class Platform:
    """The platform an image of an index runs on.

    Attributes:
        architecture (str): The CPU architecture, as Go names it (`amd64`, `arm64`, `arm`, `ppc64le`).
        os (str): The operating system, as Go names it (`linux`, `windows`).
        os_version (str | Unset): The operating system's version (Windows images).
        os_features (list[str] | Unset):
        variant (str | Unset): The CPU variant (`v8` for arm64, `v7` or `v6` for arm).
    """

    architecture: str
    os: str
    os_version: str | Unset = UNSET
    os_features: list[str] | Unset = UNSET
    variant: str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        architecture = self.architecture

        os = self.os

        os_version = self.os_version

        os_features: list[str] | Unset = UNSET
        if not isinstance(self.os_features, Unset):
            os_features = self.os_features

        variant = self.variant

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "architecture": architecture,
                "os": os,
            }
        )
        if os_version is not UNSET:
            field_dict["os.version"] = os_version
        if os_features is not UNSET:
            field_dict["os.features"] = os_features
        if variant is not UNSET:
            field_dict["variant"] = variant

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        architecture = d.pop("architecture")

        os = d.pop("os")

        os_version = d.pop("os.version", UNSET)

        os_features = cast(list[str], d.pop("os.features", UNSET))

        variant = d.pop("variant", UNSET)

        platform = cls(
            architecture=architecture,
            os=os,
            os_version=os_version,
            os_features=os_features,
            variant=variant,
        )

        platform.additional_properties = d
        return platform

    @property
    def additional_keys(self) -> list[str]:
        return list(self.additional_properties.keys())

    def __getitem__(self, key: str) -> Any:
        return self.additional_properties[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.additional_properties[key] = value

    def __delitem__(self, key: str) -> None:
        del self.additional_properties[key]

    def __contains__(self, key: str) -> bool:
        return key in self.additional_properties
