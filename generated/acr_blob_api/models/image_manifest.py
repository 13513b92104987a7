from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.annotations import Annotations
    from ..models.descriptor import Descriptor


T = TypeVar("T", bound="ImageManifest")


@_attrs_define
class ImageManifest:
    """An OCI image manifest (`application/vnd.oci.image.manifest.v1+json`) or Docker schema 2 manifest
    (`application/vnd.docker.distribution.manifest.v2+json`): one config and its layers. ORAS-style artifacts are image
    manifests with an `artifactType` (or a config of their own media type) and titled layers.

        Attributes:
            schema_version (int):
            config (Descriptor): A reference to content by its media type, digest and size.
            layers (list[Descriptor]):
            media_type (str | Unset):
            artifact_type (str | Unset):
            subject (Descriptor | Unset): A reference to content by its media type, digest and size.
            annotations (Annotations | Unset): Free-form string annotations (`org.opencontainers.image.title`, ...).
    """

    schema_version: int
    config: Descriptor
    layers: list[Descriptor]
    media_type: str | Unset = UNSET
    artifact_type: str | Unset = UNSET
    subject: Descriptor | Unset = UNSET
    annotations: Annotations | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        schema_version = self.schema_version

        config = self.config.to_dict()

        layers = []
        for layers_item_data in self.layers:
            layers_item = layers_item_data.to_dict()
            layers.append(layers_item)

        media_type = self.media_type

        artifact_type = self.artifact_type

        subject: dict[str, Any] | Unset = UNSET
        if not isinstance(self.subject, Unset):
            subject = self.subject.to_dict()

        annotations: dict[str, Any] | Unset = UNSET
        if not isinstance(self.annotations, Unset):
            annotations = self.annotations.to_dict()

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "schemaVersion": schema_version,
                "config": config,
                "layers": layers,
            }
        )
        if media_type is not UNSET:
            field_dict["mediaType"] = media_type
        if artifact_type is not UNSET:
            field_dict["artifactType"] = artifact_type
        if subject is not UNSET:
            field_dict["subject"] = subject
        if annotations is not UNSET:
            field_dict["annotations"] = annotations

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.annotations import Annotations  # noqa: PLC0415
        from ..models.descriptor import Descriptor  # noqa: PLC0415

        d = dict(src_dict)
        schema_version = d.pop("schemaVersion")

        config = Descriptor.from_dict(d.pop("config"))

        layers = []
        _layers = d.pop("layers")
        for layers_item_data in _layers:
            layers_item = Descriptor.from_dict(layers_item_data)

            layers.append(layers_item)

        media_type = d.pop("mediaType", UNSET)

        artifact_type = d.pop("artifactType", UNSET)

        _subject = d.pop("subject", UNSET)
        subject: Descriptor | Unset
        if isinstance(_subject, Unset):
            subject = UNSET
        else:
            subject = Descriptor.from_dict(_subject)

        _annotations = d.pop("annotations", UNSET)
        annotations: Annotations | Unset
        if isinstance(_annotations, Unset):
            annotations = UNSET
        else:
            annotations = Annotations.from_dict(_annotations)

        image_manifest = cls(
            schema_version=schema_version,
            config=config,
            layers=layers,
            media_type=media_type,
            artifact_type=artifact_type,
            subject=subject,
            annotations=annotations,
        )

        image_manifest.additional_properties = d
        return image_manifest

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
