//! Cache and export option parsing: the CSV syntax, legacy forms and validation.
