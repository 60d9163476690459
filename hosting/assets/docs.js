// Swagger UI over the API's own description. No validator badge: it would send the document
// to a public validator, and the page loads nothing from outside the service.
window.ui = SwaggerUIBundle({
  url: "/openapi.yaml",
  dom_id: "#swagger-ui",
  validatorUrl: null,
  deepLinking: true,
  tryItOutEnabled: false,
  persistAuthorization: false,
});
