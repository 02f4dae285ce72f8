//! How Keycloak suffers a fault: every request to the realm (discovery, keys, tokens), and the
//! answers a reverse proxy in front of it gives when it is failing or rate-limiting (Keycloak
//! itself has no rate limit), as proxies answer: an HTML page.

use keyfed_core::emulator::Fault;

use super::kinds::Struck;
use super::upstreams::Upstreams;

pub fn struck(up: &Upstreams) -> Struck {
    Struck {
        name: "Keycloak",
        control: up.keycloak().control().clone(),
        path: "/realms/",
        server_error: Fault::Status {
            status: 503,
            body: "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n\
                   <body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n\
                   <hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
                .to_owned(),
        },
        throttled: Fault::Status {
            status: 429,
            body: "<html>\r\n<head><title>429 Too Many Requests</title></head>\r\n\
                   <body>\r\n<center><h1>429 Too Many Requests</h1></center>\r\n\
                   <hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
                .to_owned(),
        },
    }
}
