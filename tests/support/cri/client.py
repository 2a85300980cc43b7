"""The CRI calls the kubelet stand-in makes, each with a deadline; a failed call raises CRIError
carrying the gRPC status code and containerd's message (which embeds the CNI plugin's error)."""

from __future__ import annotations

import grpc

from . import runtime_pb2 as api
from . import runtime_pb2_grpc as rpc


class CRIError(RuntimeError):
    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{method}: {code.name}: {details}")
        self.method, self.code, self.details = method, code, details


class CRIClient:
    def __init__(self, socket_path: str, timeout: float = 60) -> None:
        self.channel = grpc.insecure_channel(f"unix://{socket_path}")
        self.runtime = rpc.RuntimeServiceStub(self.channel)
        self.images = rpc.ImageServiceStub(self.channel)
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def call(self, method: str, request, timeout: float | None = None):
        service = self.images if method in ("ListImages", "ImageStatus") else self.runtime
        try:
            return getattr(service, method)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            raise CRIError(method, e.code(), e.details() or "") from None

    # --- the runtime -------------------------------------------------------------------
    def version(self) -> api.VersionResponse:
        return self.call("Version", api.VersionRequest(version="v1"), timeout=5)

    def conditions(self) -> dict[str, api.RuntimeCondition]:
        """Status's conditions by type (RuntimeReady, NetworkReady)."""
        status = self.call("Status", api.StatusRequest(), timeout=10).status
        return {c.type: c for c in status.conditions}

    def network_ready(self) -> bool:
        cond = self.conditions().get("NetworkReady")
        return bool(cond and cond.status)

    # --- sandboxes ---------------------------------------------------------------------
    def run_sandbox(self, config: api.PodSandboxConfig, timeout: float | None = None) -> str:
        return self.call("RunPodSandbox", api.RunPodSandboxRequest(config=config), timeout).pod_sandbox_id

    def stop_sandbox(self, sandbox_id: str) -> None:
        self.call("StopPodSandbox", api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))

    def remove_sandbox(self, sandbox_id: str) -> None:
        self.call("RemovePodSandbox", api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))

    def sandbox_status(self, sandbox_id: str, verbose: bool = False) -> api.PodSandboxStatusResponse:
        return self.call("PodSandboxStatus", api.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=verbose))

    def sandboxes(self) -> list[api.PodSandbox]:
        return list(self.call("ListPodSandbox", api.ListPodSandboxRequest()).items)

    # --- containers --------------------------------------------------------------------
    def create_container(self, sandbox_id: str, config: api.ContainerConfig,
                         sandbox_config: api.PodSandboxConfig) -> str:
        return self.call("CreateContainer", api.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox_config)).container_id

    def start_container(self, container_id: str) -> None:
        self.call("StartContainer", api.StartContainerRequest(container_id=container_id))

    def stop_container(self, container_id: str, timeout: int = 0) -> None:
        self.call("StopContainer", api.StopContainerRequest(container_id=container_id, timeout=timeout),
                  timeout=timeout + 30)

    def remove_container(self, container_id: str) -> None:
        self.call("RemoveContainer", api.RemoveContainerRequest(container_id=container_id))

    def containers(self, sandbox_id: str = "") -> list[api.Container]:
        flt = api.ContainerFilter(pod_sandbox_id=sandbox_id)
        return list(self.call("ListContainers", api.ListContainersRequest(filter=flt)).containers)

    def container_status(self, container_id: str) -> api.ContainerStatus:
        return self.call("ContainerStatus", api.ContainerStatusRequest(container_id=container_id)).status

    def container_status_info(self, container_id: str) -> dict[str, str]:
        req = api.ContainerStatusRequest(container_id=container_id, verbose=True)
        return dict(self.call("ContainerStatus", req).info)

    def exec_sync(self, container_id: str, cmd: list[str], timeout: int = 10) -> api.ExecSyncResponse:
        return self.call("ExecSync", api.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout),
                         timeout=timeout + 10)

    # --- images ------------------------------------------------------------------------
    def image_present(self, ref: str) -> bool:
        resp = self.call("ImageStatus", api.ImageStatusRequest(image=api.ImageSpec(image=ref)))
        return resp.HasField("image")
