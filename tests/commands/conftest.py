from tests.docker.conftest import docker_image, pg_container
from tests.ssh.conftest import make_sshd, ssh_client_key, sshd

__all__ = ["docker_image", "make_sshd", "pg_container", "ssh_client_key", "sshd"]
