from tests.ssh.conftest import make_sshd, ssh_client_key, sshd

__all__ = ["make_sshd", "ssh_client_key", "sshd"]
