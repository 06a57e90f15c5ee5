"""Storage providers: the domain (schemas, service, router) over the byte stores of
`opscenter.stores`."""
