"""Layer 5: the device's SOAP services on Spyne, derived from the authored wsdl/ and xsd/."""
