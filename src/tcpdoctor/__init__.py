"""tcpdoctor: find, explain, reproduce and predict Linux TCP connection-lifecycle failures."""

from tcpdoctor.errors import TcpDoctorError

__version__ = "0.1.0"

__all__ = ["TcpDoctorError", "__version__"]
